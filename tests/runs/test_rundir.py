"""Tests for advlab.runs: atomic, non-overwriting, resumable run directories, and run names."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from advlab import runs
from advlab.errors import AdvlabError
from advlab.runs import RunExists, atomic_write, attach, format_number, run_name, start


def _partial(final: Path) -> Path:
    return final.with_name(final.name + ".partial")


def _snapshot(d: Path) -> dict[str, tuple[int, bytes]]:
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(d.iterdir())}


def _leftovers(parent: Path, final: Path) -> list[str]:
    """Anything in ``parent`` besides ``final`` itself (partial dirs, trash dirs, temp files)."""
    return sorted(p.name for p in parent.iterdir() if p != final)


# ------------------------------------------------------------------------------------------ start()
def test_success_creates_final_with_config(tmp_path: Path) -> None:
    final = tmp_path / "run1"
    config = {"command": "advlab test", "eps": 0.03, "where": Path("a/b"), "t": torch.tensor([1, 2])}
    with start(final, config) as run:
        assert run.path == _partial(final) and run.path.is_dir()
        assert run.final == final and not final.exists()
        assert not run.resumed
        run.save_json("metrics.json", {"acc": 0.5, "nan": float("nan")})
        run.save_text("notes.txt", "hello")
        run.save_tensors("t.safetensors", {"a": torch.arange(6.0).view(2, 3)}, metadata={"k": "v"})
    assert run.path == final
    assert final.is_dir() and not _partial(final).exists()
    assert _leftovers(tmp_path, final) == []
    cfg = json.loads((final / "config.json").read_text())
    assert cfg["versions"]["torch"] == torch.__version__
    assert cfg["command"] == "advlab test" and cfg["eps"] == 0.03
    assert cfg["where"] == str(Path("a/b")) and cfg["t"] == [1, 2]
    assert "started" in cfg
    assert json.loads((final / "metrics.json").read_text()) == {"acc": 0.5, "nan": "nan"}
    assert (final / "notes.txt").read_text() == "hello"
    from safetensors.torch import load_file

    assert torch.equal(load_file(str(final / "t.safetensors"))["a"], torch.arange(6.0).view(2, 3))


def test_error_in_body_leaves_nothing(tmp_path: Path) -> None:
    final = tmp_path / "run"
    with pytest.raises(ValueError, match="boom"):
        with start(final, {"x": 1}) as run:
            run.save_json("metrics.json", {"a": 1})
            (run.path / "big.bin").write_bytes(b"0" * 1000)
            raise ValueError("boom")
    assert not final.exists()
    assert not _partial(final).exists()
    assert list(tmp_path.iterdir()) == []


def test_existing_final_raises_run_exists(tmp_path: Path) -> None:
    final = tmp_path / "run"
    with start(final, {"v": 1}) as run:
        run.save_text("a.txt", "old")
    before = _snapshot(final)
    entered = False
    with pytest.raises(RunExists, match="exists already") as e:
        with start(final, {"v": 2}):
            entered = True
    assert isinstance(e.value, AdvlabError)
    assert not entered
    assert _snapshot(final) == before
    assert not _partial(final).exists()


def test_final_path_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(RunExists, match="not a directory"):
        with start(f, {}, force=True):
            pass
    assert f.read_text() == "x"


def test_force_replaces_only_at_the_end(tmp_path: Path) -> None:
    final = tmp_path / "run"
    with start(final, {"v": 1}) as run:
        run.save_text("old.txt", "old")
        run.save_text("shared.txt", "old")
    before = _snapshot(final)
    with start(final, {"v": 2}, force=True) as run:
        assert run.path != final
        run.save_text("shared.txt", "new")
        run.save_text("new.txt", "new")
        # while the body runs, the old run is whole and untouched
        assert _snapshot(final) == before
    assert (final / "shared.txt").read_text() == "new"
    assert (final / "new.txt").read_text() == "new"
    assert not (final / "old.txt").exists()
    assert json.loads((final / "config.json").read_text())["v"] == 2
    assert _leftovers(tmp_path, final) == []


def test_force_with_failing_body_keeps_old_run(tmp_path: Path) -> None:
    final = tmp_path / "run"
    with start(final, {"v": 1}) as run:
        run.save_text("old.txt", "old")
    before = _snapshot(final)
    with pytest.raises(RuntimeError):
        with start(final, {"v": 2}, force=True) as run:
            run.save_text("old.txt", "new")
            raise RuntimeError("fails half way")
    assert _snapshot(final) == before
    assert _leftovers(tmp_path, final) == []


def test_interrupt_keeps_partial_then_resume_finishes(tmp_path: Path) -> None:
    final = tmp_path / "run"
    partial = _partial(final)
    with pytest.raises(KeyboardInterrupt):
        with start(final, {"v": 1}) as run:
            run.save_text("step1.txt", "done")
            raise KeyboardInterrupt
    assert not final.exists()
    assert partial.is_dir()
    assert (partial / "step1.txt").read_text() == "done"
    info = json.loads((partial / "INTERRUPTED.json").read_text())
    assert info["resume_with"] == "--resume"

    # neither resume nor force: refused, nothing changes
    with pytest.raises(RunExists, match="interrupted"):
        with start(final, {"v": 1}):
            pass
    assert (partial / "step1.txt").exists() and (partial / "INTERRUPTED.json").exists()

    with start(final, {"v": 1}, resume=True) as run:
        assert run.resumed
        assert run.path == partial
        assert (run.path / "step1.txt").read_text() == "done"
        run.save_text("step2.txt", "done too")
    assert not partial.exists()
    assert (final / "step1.txt").read_text() == "done"
    assert (final / "step2.txt").read_text() == "done too"
    assert (final / "config.json").exists()
    assert not (final / "INTERRUPTED.json").exists()


def test_force_discards_an_interrupted_partial(tmp_path: Path) -> None:
    final = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        with start(final, {}) as run:
            run.save_text("stale.txt", "stale")
            raise KeyboardInterrupt
    with start(final, {}, force=True) as run:
        assert not run.resumed
        assert not (run.path / "stale.txt").exists()
        run.save_text("fresh.txt", "fresh")
    assert sorted(p.name for p in final.iterdir()) == ["config.json", "fresh.txt"]
    assert not _partial(final).exists()


def test_resume_of_a_finished_run_opens_it_in_place(tmp_path: Path) -> None:
    final = tmp_path / "run"
    with start(final, {}) as run:
        run.save_text("a.txt", "a")
    with start(final, {}, resume=True) as run:
        assert run.resumed and run.path == final == run.final
        assert (run.path / "a.txt").read_text() == "a"


def test_save_state_keeps_partial_on_error_and_load_state_reads_it(tmp_path: Path) -> None:
    final = tmp_path / "run"
    t = torch.randn(3, 4)
    with pytest.raises(ValueError):
        with start(final, {}) as run:
            assert run.load_state("ckpt") is None
            run.save_state("ckpt", {"t": t}, {"step": 7})
            assert run.checkpointed
            raise ValueError("crash after a checkpoint")
    partial = _partial(final)
    assert partial.is_dir() and not final.exists()
    assert (partial / "ckpt.safetensors").exists() and (partial / "ckpt.json").exists()
    with start(final, {}, resume=True) as run:
        assert run.resumed
        state = run.load_state("ckpt")
        assert state is not None
        tensors, info = state
        assert torch.equal(tensors["t"], t) and info == {"step": 7}
    assert final.is_dir() and not partial.exists()


def test_resumed_run_that_errors_keeps_its_partial(tmp_path: Path) -> None:
    final = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        with start(final, {}) as run:
            run.save_text("work.txt", "w")
            raise KeyboardInterrupt
    with pytest.raises(ValueError):
        with start(final, {}, resume=True) as run:
            raise ValueError("again")
    assert (_partial(final) / "work.txt").read_text() == "w"


def test_batches_with_gaps_and_a_second_process_attaching(tmp_path: Path) -> None:
    final = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        with start(final, {}) as run:
            with pytest.raises(AdvlabError, match="no run in progress"):
                attach(tmp_path / "other")
            other = attach(final)  # another rank writes into the same partial directory
            assert other.path == run.path and other.final == final and other.checkpointed
            run.save_batch(0, {"t": torch.zeros(2)}, {"b": 0})
            other.save_batch(3, {"t": torch.ones(2)}, {"b": 3})
            (run.path / "batch_00002.safetensors").write_bytes(b"cut off mid-save: no JSON sidecar")
            assert run.batch_indices() == [0, 3]
            assert [len(run.load_batches())] == [1]  # the prefix view stops at the first gap
            states = run.load_batch_map()
            assert (
                sorted(states) == [0, 3] and states[3][1] == {"b": 3} and torch.equal(states[3][0]["t"], torch.ones(2))
            )
            assert sorted(run.load_batch_map([3, 4])) == [3]
            raise KeyboardInterrupt
    with start(final, {}, resume=True) as run:
        assert run.batch_indices() == [0, 3]
        run.clear_batches()
        assert run.batch_indices() == []


def test_run_helpers_and_nested_out(tmp_path: Path) -> None:
    final = tmp_path / "a" / "b" / "run"  # parents are created
    with start(final, {}) as run:
        assert run.file("x.json") == run.path / "x.json"
        run.save_json("x.json", {"k": [1, 2]})
        assert run.load_json("x.json") == {"k": [1, 2]}
    assert json.loads((final / "x.json").read_text()) == {"k": [1, 2]}


# ------------------------------------------------------------------------------------------ atomic_write
def test_atomic_write_bytes_and_text(tmp_path: Path) -> None:
    p = tmp_path / "d" / "f.txt"
    atomic_write(p, "héllo")
    assert p.read_bytes() == "héllo".encode()
    atomic_write(p, b"\x00\x01")
    assert p.read_bytes() == b"\x00\x01"
    assert os.listdir(p.parent) == ["f.txt"]


def test_atomic_write_failure_leaves_no_temp_and_old_content(tmp_path: Path) -> None:
    p = tmp_path / "f.bin"
    atomic_write(p, b"old")
    with pytest.raises(TypeError):
        atomic_write(p, object())  # type: ignore[arg-type]
    assert p.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f.bin"]
    q = tmp_path / "new.bin"
    with pytest.raises(TypeError):
        atomic_write(q, 12345)  # type: ignore[arg-type]
    assert not q.exists()
    assert os.listdir(tmp_path) == ["f.bin"]


# ------------------------------------------------------------------------------------------ names
def test_run_name_seed000_example() -> None:
    assert (
        run_name("resnet18", "imagenet", "min", "svhn", "pgd", 0.03, 0.001)
        == "resnet18_imagenet-min-svhn_pgd_eps0.03_alpha0.001"
    )
    assert runs.run_name("m", "d", "x", "y", "fgsm") == "m_d-x-y_fgsm"
    assert run_name("a b/c", "d", "m", "s", "pgd", eps=1) == "a-b-c_d-m-s_pgd_eps1"


def test_run_names_read_eps_as_people_write_it_and_show_norm_steps_target_limit() -> None:
    from advlab.attacks import PGD

    name = run_name(
        "digits-cnn", "digits", "attack", "digits", "pgd", attack=PGD(eps=8 / 255, steps=10), target="wombat", limit=40
    )
    assert (
        name.startswith("digits-cnn_digits-attack-digits_pgd-linf_eps8_255_steps10_to-wombat_n40_") and "e-" not in name
    )
    assert run_name("m", "d", "eval", "d", "pgd", attack=PGD(eps=2 / 255)).split("_")[3] == "eps2"  # 2/255 -> eps2_255
    assert "_eps0.1_" in run_name("m", "d", "attack", "d", "pgd", attack=PGD(eps=0.1))
    l2, linf = (run_name("m", "d", "attack", "d", "pgd", attack=PGD(eps=1.0, norm=n)) for n in ("l2", "linf"))
    assert "pgd-l2_eps1_" in l2 and "pgd-linf_eps1_" in linf


def test_run_names_differ_when_any_setting_differs_and_repeat_for_the_same_ones() -> None:
    from advlab.attacks import PGD

    def name(**kw: object) -> str:
        return run_name("m", "d", "attack", "d", "pgd", attack=PGD(eps=0.1, **kw), settings={"weights": None})  # type: ignore[arg-type]

    names = {name(), name(loss="margin"), name(seed=1), name(restarts=2), name(steps=20)}
    assert len(names) == 5 and name() == name()
    assert run_name("m", "d", "a", "d", "pgd", attack=PGD(eps=0.1), settings={"weights": "w.pt"}) != name()


@pytest.mark.parametrize("v", [8 / 255, 0.03, 1 / 3, 2 / 3, 123.456, 1e-7, -0.0421, 2.5e5])
def test_format_number_round_trips(v: float) -> None:
    s = format_number(v)
    assert "_" not in s and " " not in s
    assert abs(float(s) - v) <= 1e-3 * abs(v)


def test_format_number_examples() -> None:
    assert format_number(1) == "1"
    assert format_number(1.0) == "1"
    assert format_number(0.1) == "1e-1"
    assert format_number(0.001) == "1e-3"
    assert format_number(0) == "0"
    assert format_number(8 / 255) == "3.137e-2"
    assert format_number(16) == "16"


# ------------------------------------------------------------------------------------------ fingerprints
def test_content_hash_sees_every_byte_and_no_memory_layout() -> None:
    from advlab.runs.fingerprint import content_hash, fingerprint

    x = torch.rand(4, 3, 5, 5)
    assert content_hash(x) == content_hash(x.clone()) == content_hash(x.to(memory_format=torch.channels_last))
    y = x.clone()
    y[2, 1, 3, 4] = torch.nextafter(y[2, 1, 3, 4], torch.tensor(2.0))  # one ulp of one pixel
    assert content_hash(y) != content_hash(x) and content_hash(x.double()) != content_hash(x)
    net = torch.nn.Linear(3, 2)
    before = fingerprint({"model": net, "data": (x, torch.arange(4))})
    with torch.no_grad():
        net.bias[0] += 1e-3
    after = fingerprint({"model": net, "data": (x, torch.arange(4))})
    assert before["data"] == after["data"] and before["model"] != after["model"]


# ------------------------------------------------------------------------------------------ the lock
def test_a_lock_held_on_another_host_is_never_taken_over(tmp_path: Path) -> None:
    from advlab.runs.lock import LOCK_FILE, RunInUse

    final = tmp_path / "run"
    _partial(final).mkdir()
    (_partial(final) / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "elsewhere.example"}))
    for flags in ({}, {"resume": True}, {"force": True}):
        with pytest.raises(RunInUse, match=r"in use by pid 1 on elsewhere.example .*if that process is gone, remove"):
            with start(final, {"v": 1}, **flags):  # type: ignore[arg-type]
                pass
    assert sorted(p.name for p in _partial(final).iterdir()) == [LOCK_FILE]


def test_a_finished_run_holds_no_lock_and_an_interrupted_one_releases_it(tmp_path: Path) -> None:
    from advlab.runs.lock import LOCK_FILE

    with start(tmp_path / "a", {"v": 1}) as run:
        assert (run.path / LOCK_FILE).exists()
    assert not (tmp_path / "a" / LOCK_FILE).exists()
    with pytest.raises(KeyboardInterrupt):
        with start(tmp_path / "b", {"v": 1}):
            raise KeyboardInterrupt
    assert (tmp_path / "b.partial" / "INTERRUPTED.json").exists() and not (tmp_path / "b.partial" / LOCK_FILE).exists()
