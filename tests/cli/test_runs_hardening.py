"""Run directories under stress (issue 14): a resume whose inputs changed, two processes on one --out, a full or
read-only disk, odd --out values, options that cannot work, file modes, progress off a terminal, run names, and
per-sample randomness that does not depend on the batch size. Each through the real CLI: exit code 2, one line
on stderr, no traceback, and the state on disk checked."""

from __future__ import annotations

import csv
import errno
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from advlab import attacks, zoo
from advlab.cli import ticker
from advlab.runs import rundir, shards
from advlab.runs.lock import LOCK_FILE
from tests.cli.helpers import run_cli


def _one_line(rc: int, err: str, *words: str) -> None:
    assert rc == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err, err


def _digits_npz(path: Path, start: int, n: int = 30) -> Path:
    from advlab import data

    x, y = data.load("digits:test")[:2]
    np.savez(path, x=x[start : start + n].numpy(), y=y[start : start + n].numpy())
    return path


def _attack(data: str, out: Path, *extra: str) -> list[str]:
    return [
        "attack",
        "--model",
        "digits-cnn",
        "--data",
        data,
        "--attack",
        "pgd",
        "--eps",
        "0.1",
        "--steps",
        "3",
        "--batch-size",
        "10",
        "--out",
        str(out),
        "-q",
        *extra,
    ]


def _interrupt_after_first_unit(monkeypatch: pytest.MonkeyPatch) -> None:
    """The next run stops with Ctrl-C once its first unit is saved (as a user would, in this process)."""
    save = shards.Shards.save

    def save_then_stop(self: shards.Shards, *a: object, **kw: object) -> None:
        save(self, *a, **kw)  # type: ignore[arg-type]
        raise KeyboardInterrupt

    monkeypatch.setattr(shards.Shards, "save", save_then_stop)


# ------------------------------------------------------------------------------------ resume of changed inputs
@pytest.mark.parametrize("changed", ["data", "weights"])
def test_resume_refuses_when_the_data_or_the_weights_changed_since_the_interruption(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, changed: str
) -> None:
    data = _digits_npz(tmp_path / "d.npz", 0)
    net = zoo.load("digits-cnn").net  # type: ignore[union-attr]
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(weights))
    out = tmp_path / "run"
    argv = _attack(f"tensors:{data}", out, "--weights", str(weights))
    with monkeypatch.context() as m:
        _interrupt_after_first_unit(m)
        rc, _, err = run_cli(argv)
    assert rc == 130 and (tmp_path / "run.partial" / "batch_00000.json").exists(), err
    fingerprint = json.loads((tmp_path / "run.partial" / "config.json").read_text())["fingerprint"]
    assert set(fingerprint) == {"model", "data"}
    if changed == "data":
        _digits_npz(data, 100)  # same file name, other images
    else:
        save_file({k: (v + 0.01).contiguous() for k, v in net.state_dict().items()}, str(weights))
    rc, _, err = run_cli([*argv, "--resume"])
    _one_line(rc, err, "changed since it was started", "model" if changed == "weights" else "data", "--force")
    assert (tmp_path / "run.partial" / "batch_00000.json").exists() and not out.exists()  # the saved work is kept
    rc, _, err = run_cli([*argv, "--force"])  # starting over is allowed
    assert rc == 0, err
    x_adv, x = (load_file(str(out / "adversarials.safetensors"))[k] for k in ("x_adv", "x"))
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6  # no batch of the old images among the new


def test_resume_with_unchanged_inputs_continues(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _digits_npz(tmp_path / "d.npz", 0)
    argv = _attack(f"tensors:{data}", tmp_path / "run")
    with monkeypatch.context() as m:
        _interrupt_after_first_unit(m)
        assert run_cli(argv)[0] == 130
    rc, _, err = run_cli([*argv, "--resume"])
    assert rc == 0, err
    rc, _, err = run_cli(_attack(f"tensors:{data}", tmp_path / "fresh"))
    assert rc == 0, err
    assert (tmp_path / "run" / "samples.csv").read_text() == (tmp_path / "fresh" / "samples.csv").read_text()


# ------------------------------------------------------------------------------------------------ the lock
@pytest.fixture
def live_pid() -> object:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def _locked_partial(tmp_path: Path, pid: int) -> Path:
    partial = tmp_path / "run.partial"
    partial.mkdir()
    (partial / LOCK_FILE).write_text(json.dumps({"pid": pid, "host": socket.gethostname()}))
    (partial / "batch_00000.json").write_text("{}")  # the live run's work
    return partial


@pytest.mark.parametrize("flags", [[], ["--resume"], ["--force"]])
def test_a_run_in_use_by_a_live_process_is_named_and_never_touched(
    tmp_path: Path, live_pid: int, flags: list[str]
) -> None:
    partial = _locked_partial(tmp_path, live_pid)
    before = sorted(p.name for p in partial.iterdir())
    rc, _, err = run_cli([*_attack("digits:test", tmp_path / "run", "--limit", "20"), *flags])
    _one_line(rc, err, f"in use by pid {live_pid} on {socket.gethostname()}")
    assert sorted(p.name for p in partial.iterdir()) == before and not (tmp_path / "run").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.partial"]  # no stray directory either


def test_the_lock_of_a_dead_process_is_stale_and_resume_takes_over(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    partial = tmp_path / "run.partial"
    partial.mkdir()
    (partial / LOCK_FILE).write_text(json.dumps({"pid": proc.pid, "host": socket.gethostname()}))
    rc, _, err = run_cli([*_attack("digits:test", tmp_path / "run", "--limit", "20"), "--resume"])
    assert rc == 0, err
    assert not partial.exists() and not (tmp_path / "run" / LOCK_FILE).exists()


#: a run that stops for a minute after its first unit is saved, holding its run directory
SLOW_RUN = """
import sys, time
from advlab.cli import main
from advlab.runs import shards
save = shards.Shards.save
def slow(self, *a, **kw):
    save(self, *a, **kw)
    time.sleep(60)
shards.Shards.save = slow
sys.exit(main(sys.argv[1:]))
"""


def test_two_real_processes_on_one_out(tmp_path: Path) -> None:
    """The second of two live runs on one --out says who holds it (even with --force) and leaves it alone; once
    the first is killed (SIGKILL: its lock stays behind, stale), --resume takes over and finishes."""
    argv = _attack("digits:test", tmp_path / "run", "--limit", "20")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([sys.executable, "-c", SLOW_RUN, *argv], env=env, stderr=subprocess.PIPE, text=True)
    partial = tmp_path / "run.partial"
    try:
        for _ in range(1200):  # until it has saved a unit (and sleeps)
            if (partial / "batch_00000.json").exists() or first.poll() is not None:
                break
            time.sleep(0.05)
        assert first.poll() is None, first.communicate()[1]
        second = subprocess.run(
            [sys.executable, "-m", "advlab", *argv, "--force"], env=env, capture_output=True, text=True
        )
        _one_line(second.returncode, second.stderr, f"in use by pid {first.pid}")
        assert first.poll() is None and (partial / "batch_00000.json").exists() and (partial / LOCK_FILE).exists()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["run.partial"]
    finally:
        first.kill()
        first.communicate()
    rc, _, err = run_cli([*argv, "--resume"])
    assert rc == 0, err
    assert (tmp_path / "run" / "metrics.json").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["run"]


# ------------------------------------------------------------------------------------ full / read-only disks
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_a_full_or_read_only_disk_keeps_the_partial_run_for_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    out = tmp_path / "run"
    argv = _attack("digits:test", out, "--limit", "30")
    write, calls = rundir.atomic_write, []

    def failing(path: object, data: object) -> None:
        calls.append(path)
        if str(path).endswith("batch_00001.safetensors"):
            raise OSError(code, os.strerror(code), str(path))
        write(path, data)  # type: ignore[arg-type]

    with monkeypatch.context() as m:
        m.setattr(rundir, "atomic_write", failing)
        rc, _, err = run_cli(argv)
    _one_line(
        rc,
        err,
        "--resume",
        "no space left" if code == errno.ENOSPC else "read-only file system",
        str(tmp_path / "run.partial"),
    )
    partial = tmp_path / "run.partial"
    assert (partial / "batch_00000.json").exists() and not (partial / LOCK_FILE).exists() and not out.exists()
    rc, _, err = run_cli([*argv, "--resume"])  # space freed: the same command with --resume finishes
    assert rc == 0, err
    rc, _, err = run_cli(_attack("digits:test", tmp_path / "fresh", "--limit", "30"))
    assert rc == 0 and (out / "samples.csv").read_text() == (tmp_path / "fresh" / "samples.csv").read_text()


@pytest.mark.parametrize("where", ["/", ".", "..", "afile/run", "afile/deeper/run", "/proc/advlab-run"])
def test_an_out_that_cannot_be_a_run_directory_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("not a directory")
    rc, _, err = run_cli(_attack("digits:test", Path(where), "--limit", "10"))
    _one_line(rc, err, "--out" if where in ("/", ".", "..", "afile/run") else "cannot create")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


# ------------------------------------------------------------------------------------ options checked first
@pytest.mark.parametrize("snapshots", ["5,-3", "-3", "500"])
def test_impossible_snapshots_fail_before_any_work_and_leave_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, snapshots: str
) -> None:
    monkeypatch.chdir(tmp_path)
    rc, _, err = run_cli(
        ["prototypes", "--model", "digits-cnn", "--targets", "0-1", "--steps", "20", f"--snapshots={snapshots}", "-q"]
    )
    _one_line(rc, err, "snapshots")
    assert list(tmp_path.iterdir()) == []
    rc, _, err = run_cli(
        ["prototypes", "--model", "digits-cnn", "--targets", "0-1", "--steps", "20", "--snapshots=0,5,20", "-q"]
    )
    assert rc == 0, err  # and nothing blocks the next run


# ------------------------------------------------------------------------------------------------ file modes
def test_run_files_get_the_mode_the_umask_gives(tmp_path: Path) -> None:
    old = os.umask(0o002)
    try:
        rc, _, err = run_cli(_attack("digits:test", tmp_path / "run", "--limit", "10"))
    finally:
        os.umask(old)
    assert rc == 0, err
    files = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert len(files) > 5 and {oct(p.stat().st_mode & 0o777) for p in files} == {oct(0o664)}


# ------------------------------------------------------------------------------------------------ progress
def test_eval_writes_progress_lines_when_stderr_is_not_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ticker, "EVERY", 0.0)  # a line after every batch (the default: every 10 s)
    argv = [
        "eval",
        "--model",
        "digits-cnn",
        "--data",
        "digits:test",
        "--limit",
        "30",
        "--batch-size",
        "10",
        "--attack",
        "pgd",
        "--eps",
        "0.1",
        "--steps",
        "2",
    ]
    rc, _, err = run_cli([*argv, "--out", str(tmp_path / "a")])
    assert rc == 0, err
    lines = err.strip().splitlines()
    assert [ln.split(",")[0] for ln in lines[:3]] == [
        "evaluate: 1/3 batches",
        "evaluate: 2/3 batches",
        "evaluate: 3/3 batches",
    ], err
    assert "s left" in lines[0]
    rc, _, err = run_cli([*argv, "--out", str(tmp_path / "b"), "--quiet"])
    assert rc == 0 and err == ""


def test_progress_lines_wait_for_the_interval() -> None:
    import io
    from contextlib import redirect_stderr

    buf = io.StringIO()
    with redirect_stderr(buf):
        assert list(ticker.lines(range(5), desc="x", unit="batch")) == list(range(5))
    assert buf.getvalue() == ""  # a run shorter than EVERY seconds stays silent


# ------------------------------------------------------------------------------------------------ run names
def test_default_names_tell_runs_apart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    base = [
        "attack",
        "--model",
        "digits-cnn",
        "--data",
        "digits:test",
        "--attack",
        "pgd",
        "--limit",
        "10",
        "--steps",
        "2",
        "--pngs",
        "0",
        "-q",
    ]
    for extra in (
        ["--eps", "1", "--norm", "l2"],
        ["--eps", "1", "--norm", "linf"],
        ["--eps", "1", "--norm", "l2", "--steps", "3", "--target", "3"],
        ["--eps", "2/255", "--limit", "12"],
    ):
        rc, _, err = run_cli([*base, *extra])
        assert rc == 0, (extra, err)
    names = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert len(names) == 4
    assert any("pgd-l2_eps1_steps2_n10_" in n for n in names) and any("pgd-linf_eps1_steps2_n10_" in n for n in names)
    assert any("pgd-l2_eps1_steps3_to-3_n10_" in n for n in names) and any(
        "pgd-linf_eps2_255_steps2_n12_" in n for n in names
    )
    rc, _, err = run_cli(
        [*base, "--eps", "2/255", "--limit", "12", "--batch-size", "3"]
    )  # the batch size changes no result, nor the name
    _one_line(rc, err, "exists already")


# ------------------------------------------------------------------------------------ per-sample randomness
RANDOMIZED = [
    attacks.RandomNoise(eps=0.3, tries=5),
    attacks.RandomNoise(eps=2.0, norm="l2", tries=5),
    attacks.Square(eps=0.2, max_queries=40),
    attacks.Square(eps=1.5, norm="l2", max_queries=40),
    attacks.NES(eps=0.2, max_queries=41, samples=4),
    attacks.SPSA(eps=0.2, max_queries=41, samples=4),
]


@pytest.mark.parametrize("atk", RANDOMIZED, ids=lambda a: f"{a.name}-{a.norm}")
@pytest.mark.parametrize("target", [None, "random"])
def test_randomized_attacks_give_each_image_the_same_result_in_any_batch(
    atk: attacks.Attack, target: str | None
) -> None:
    from advlab import data

    model = zoo.load("digits-cnn")
    x, y = (t[:21] for t in data.load("digits:test")[:2])
    whole = atk(model, x, y, target=target)
    parts = [atk(model, x[i : i + 7], y[i : i + 7], target=target) for i in range(0, 21, 7)]
    reordered = atk(model, x.flip(0), y.flip(0), target=target)
    assert torch.equal(torch.cat([p.success for p in parts]), whole.success) and torch.equal(
        reordered.success.flip(0), whole.success
    )
    assert torch.allclose(torch.cat([p.x_adv for p in parts]), whole.x_adv, atol=1e-5)
    assert torch.allclose(reordered.x_adv.flip(0), whole.x_adv, atol=1e-5)
    if target is not None:
        assert torch.equal(torch.cat([p.target for p in parts]), whole.target) and bool((whole.target != y).all())
    assert not torch.equal(
        whole.x_adv, type(atk)(**{**_fields(atk), "seed": 1})(model, x, y, target=target).x_adv
    )  # the seed matters


def _fields(atk: attacks.Attack) -> dict[str, object]:
    import dataclasses

    return {f.name: getattr(atk, f.name) for f in dataclasses.fields(atk)}


def _per_sample(out: Path) -> list[tuple[str, ...]]:
    keep = ("index", "label", "clean_pred", "adv_pred", "broken_by")
    return [tuple(r.get(k, "") for k in keep) for r in csv.DictReader((out / "samples.csv").open())]


@pytest.mark.parametrize("command", [["attack", "--target", "random"], ["eval"]])  # eval: and its random-noise check
def test_the_batch_size_changes_no_per_sample_result_of_a_randomized_attack(tmp_path: Path, command: list[str]) -> None:
    argv = [
        command[0],
        "--model",
        "digits-cnn",
        "--data",
        "digits:test",
        "--limit",
        "40",
        "--eps",
        "0.15",
        "--attack",
        "square",
        "--max-queries",
        "30",
        *command[1:],
        "-q",
    ]
    for bs in (7, 64):
        rc, _, err = run_cli([*argv, "--batch-size", str(bs), "--out", str(tmp_path / f"bs{bs}")])
        assert rc == 0, err
    a, b = _per_sample(tmp_path / "bs7"), _per_sample(tmp_path / "bs64")
    assert a == b and len(a) == 40
    assert any(r[3] != r[2] for r in a)  # the attack did break some images
    xa, xb = (load_file(str(tmp_path / d / "adversarials.safetensors"))["x_adv"] for d in ("bs7", "bs64"))
    assert torch.allclose(xa, xb, atol=1e-5)  # equal up to the float rounding of batched forwards
