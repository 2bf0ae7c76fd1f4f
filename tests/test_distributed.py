"""``torchrun -m advlab ...``: 2 processes on the CPU (gloo, loopback) write the same results as one process.

Each test launches ``python -m torch.distributed.run --nproc_per_node=2 -m advlab ...`` (torchrun) on a small
digits workload and compares every output file with a single-process run of the same command: metrics (less
the timing fields), CSV tables and every tensor, exactly. One test kills a rank after its first unit (launching
:mod:`tests.crash_after` instead of ``advlab``) and checks that ``--resume`` recomputes only the units that were
not saved.
"""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from advlab import runs
from advlab.distributed import Dist
from tests.cli.helpers import run_cli

#: the repository root: ``python -m tests.crash_after`` runs from there
ROOT = Path(__file__).resolve().parents[1]
#: fields that measure time, not results
TIMING = {"seconds", "target_steps_per_second"}
EVAL = [
    "eval",
    "--model",
    "digits-cnn",
    "--data",
    "digits:test",
    "--limit",
    "64",
    "--attack",
    "pgd",
    "--eps",
    "0.1",
    "--steps",
    "5",
    "--batch-size",
    "16",
    "--json",
    "-q",
]
EVAL_FILES = ["metrics.json", "samples.csv", "adversarials.safetensors"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def torchrun(
    argv: list[str],
    nproc: int = 2,
    env: dict[str, str] | None = None,
    timeout: float = 150,
    crash_after: tuple[int, int] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``torchrun --nproc_per_node=NPROC -m advlab ARGV`` on loopback, one thread per process. ``crash_after``
    = (rank, n): that rank ends its process right after saving its n-th unit (:mod:`tests.crash_after`)."""
    module = ["advlab"] if crash_after is None else ["tests.crash_after", *map(str, crash_after)]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={nproc}",
        "--nnodes=1",
        "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}",
        "-m",
        *module,
        *argv,
    ]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "ADVLAB_DIST_TIMEOUT": "2", **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=timeout, cwd=ROOT)


def _strip(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in TIMING}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _csv(path: Path) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(io.StringIO(path.read_text()))]


def assert_same_run(a: Path, b: Path, files: list[str]) -> None:
    """The run directories hold the same results: every named file equal (timings aside), no state left."""
    for name in files:
        pa, pb = a / name, b / name
        if name.endswith(".json"):
            assert _strip(json.loads(pa.read_text())) == _strip(json.loads(pb.read_text())), name
        elif name.endswith(".csv"):
            assert _csv(pa) == _csv(pb), name
        elif name.endswith(".safetensors"):
            ta, tb = load_file(str(pa)), load_file(str(pb))
            assert ta.keys() == tb.keys(), name
            for k in ta:
                assert torch.equal(ta[k], tb[k]), f"{name}: {k}"
        else:
            assert pa.read_bytes() == pb.read_bytes(), name
    for d in (a, b):
        assert not list(d.glob("batch_*")) and not list(d.glob("rank_*")), d
    assert {p.name for p in a.iterdir()} - {"shards.json"} == {p.name for p in b.iterdir()} - {"shards.json"}


@pytest.fixture(scope="module")
def eval_reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "eval"
    rc, _, err = run_cli([*EVAL, "--out", str(out)])
    assert rc == 0, err
    return out


def test_units_are_dealt_round_robin() -> None:
    ranks = [Dist(rank=r, world_size=3) for r in range(3)]
    assert [[u for u in range(8) if d.owns(u)] for d in ranks] == [[0, 3, 6], [1, 4, 7], [2, 5]]
    assert Dist().owns(5) and Dist().is_main() and not Dist().distributed


def test_eval_on_two_processes_equals_one(eval_reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    proc = torchrun([*EVAL, "--out", str(out)])
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert json.loads(proc.stdout) == {
        k: v for k, v in metrics.items() if k not in ("model", "data")
    }  # rank 0 alone prints
    assert_same_run(out, eval_reference, EVAL_FILES)
    shards = json.loads((out / "shards.json").read_text())
    assert (
        shards["world_size"] == 2 and shards["units"] == 4 and shards["computed_by_rank"] == {"0": [0, 2], "1": [1, 3]}
    )


def test_a_rank_that_dies_loses_only_its_unfinished_units(eval_reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    proc = torchrun([*EVAL, "--out", str(out)], crash_after=(1, 1))  # rank 1 dies after its first unit
    assert proc.returncode != 0
    partial = runs.attach(out)
    saved = partial.batch_indices()
    assert 1 in saved and 3 not in saved and not out.exists()  # rank 1 saved unit 1, never unit 3
    proc = torchrun([*EVAL, "--out", str(out), "--resume"])
    assert proc.returncode == 0, proc.stderr
    shards = json.loads((out / "shards.json").read_text())
    assert shards["reused"] == saved  # what was saved is not computed again; only the rest is
    assert sorted(shards["computed_by_rank"]["0"] + shards["computed_by_rank"]["1"]) == sorted(
        set(range(4)) - set(saved)
    )
    assert_same_run(out, eval_reference, EVAL_FILES)


def test_attack_on_two_processes_equals_one(tmp_path: Path) -> None:
    argv = [
        "attack",
        "--model",
        "digits-cnn",
        "--data",
        "digits:test",
        "--limit",
        "40",
        "--attack",
        "pgd",
        "--eps",
        "0.1",
        "--steps",
        "5",
        "--target",
        "random",
        "--batch-size",
        "16",
        "--pngs",
        "4",
        "--json",
        "-q",
    ]
    rc, _, err = run_cli([*argv, "--out", str(tmp_path / "one")])
    assert rc == 0, err
    proc = torchrun([*argv, "--out", str(tmp_path / "two")])
    assert proc.returncode == 0, proc.stderr
    assert_same_run(tmp_path / "two", tmp_path / "one", ["metrics.json", "samples.csv", "adversarials.safetensors"])
    pngs = sorted(p.name for p in (tmp_path / "two" / "adversarials").iterdir())
    assert pngs == sorted(p.name for p in (tmp_path / "one" / "adversarials").iterdir()) and len(pngs) == 4


def test_prototypes_on_two_processes_equal_one(tmp_path: Path) -> None:
    # -s, not --start: torchrun's own parser would read --start as an abbreviation of its --start-method
    argv = [
        "prototypes",
        "--model",
        "digits-cnn",
        "-s",
        "digits:test",
        "--limit",
        "3",
        "--steps",
        "30",
        "--jitter",
        "1",
        "--batch-size",
        "10",
        "--json",
        "-q",
    ]
    rc, _, err = run_cli([*argv, "--out", str(tmp_path / "one")])
    assert rc == 0, err
    proc = torchrun([*argv, "--out", str(tmp_path / "two")])
    assert proc.returncode == 0, proc.stderr
    assert_same_run(tmp_path / "two", tmp_path / "one", ["metrics.json", "prototypes.safetensors", "trajectories.csv"])
    assert json.loads((tmp_path / "two" / "shards.json").read_text())["computed_by_rank"] == {"0": [0, 2], "1": [1]}


def test_a_study_on_two_processes_equals_one(tmp_path: Path) -> None:
    argv = [
        "study",
        "prune",
        "--model",
        "digits-cnn",
        "--data",
        "digits:test",
        "--limit",
        "64",
        "--steps",
        "3",
        "--defense",
        "e",
        "--settings",
        "e=0.01,0.05,0.1",
        "--json",
        "-q",
    ]
    rc, _, err = run_cli([*argv, "--out", str(tmp_path / "one")])
    assert rc == 0, err
    proc = torchrun([*argv, "--out", str(tmp_path / "two")])
    assert proc.returncode == 0, proc.stderr
    assert_same_run(tmp_path / "two", tmp_path / "one", ["metrics.json", "study.csv", "study.md"])
    rows = json.loads((tmp_path / "two" / "metrics.json").read_text())["rows"]
    assert rows[0]["p_robust"] is None and all(
        r["p_robust"] is not None for r in rows[1:]
    )  # rank 1's rows got their tests


def test_bad_input_is_one_line_on_every_rank(eval_reference: Path) -> None:
    proc = torchrun([*EVAL, "--out", str(eval_reference)])  # exists already: rank 0 finds out and tells rank 1
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if "advlab eval: error:" in ln]
    assert len(lines) == 2 and all(
        ln.startswith("advlab eval: error:") and ln.count("exists already") == 1 for ln in lines
    ), proc.stderr
    assert "advlab/cli/" not in proc.stderr  # no traceback from the command itself


def test_commands_that_do_not_shard_refuse_torchrun(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    rc, _, err = run_cli(["train", "--model", "digits-cnn", "--data", "digits:train", "--out", str(tmp_path / "t")])
    assert rc == 2 and "run this command without torchrun" in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_a_library_call_sharded_with_runs_resumable_equals_one_process(tmp_path: Path) -> None:
    """A script's ``prototypes.generate`` under ``runs.resumable`` on two ranks (tests/runs/sharded_generate.py):
    each rank evolves its own batches, and rank 0's merge equals one process's prototypes."""
    from advlab import prototypes, zoo
    from tests.runs import sharded_generate as script

    out = tmp_path / "lib"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1"]
    cmd += ["--master_addr=127.0.0.1", f"--master_port={_free_port()}", "-m", "tests.runs.sharded_generate", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ADVLAB_DIST_TIMEOUT": "2"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=150, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shards = json.loads((out / "shards.json").read_text())
    assert shards["computed_by_rank"] == {"0": [0, 2], "1": [1]}
    one = prototypes.generate(zoo.load("digits-cnn"), config=script.config(), **script.SETTINGS).evolution.tensors()
    merged = load_file(str(tmp_path / "lib.safetensors"))
    assert merged.keys() == one.keys() and all(torch.equal(merged[k], one[k]) for k in one)


def _node(
    argv: list[str], node_rank: int, port: int, crash_after: tuple[int, int] | None = None
) -> subprocess.Popen[str]:
    """One of two "machines" (``torchrun --nnodes=2 --node_rank=NODE_RANK``, one process each) meeting at
    127.0.0.1:PORT, the rendezvous options the README gives for M machines."""
    module = ["advlab"] if crash_after is None else ["tests.crash_after", *map(str, crash_after)]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=1",
        "--nnodes=2",
        f"--node_rank={node_rank}",
        "--master_addr=127.0.0.1",
        f"--master_port={port}",
        "-m",
        *module,
        *argv,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ADVLAB_DIST_TIMEOUT": "2"}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)


@pytest.mark.slow
def test_two_machines_equal_one_and_a_lost_machine_is_resumed_on_one(eval_reference: Path, tmp_path: Path) -> None:
    """Two launches with ``--nnodes=2`` (each its own node_rank, as on two machines) write what one process writes;
    when the second machine dies after its first unit, ``--resume`` on the first machine alone (no torchrun)
    computes only the units that were not saved and writes the same run."""
    out = tmp_path / "eval"
    port = _free_port()
    nodes = [_node([*EVAL, "--out", str(out)], r, port) for r in (0, 1)]
    results = [n.communicate(timeout=300) for n in nodes]
    assert [n.returncode for n in nodes] == [0, 0], results
    assert_same_run(out, eval_reference, EVAL_FILES)
    assert json.loads((out / "shards.json").read_text())["world_size"] == 2

    lost = tmp_path / "lost"
    port = _free_port()
    nodes = [_node([*EVAL, "--out", str(lost)], 0, port), _node([*EVAL, "--out", str(lost)], 1, port, (1, 1))]
    for n in nodes:
        n.communicate(timeout=300)
    assert all(n.returncode != 0 for n in nodes)  # machine 1 died; machine 0 gave up waiting for it
    saved = runs.attach(lost).batch_indices()
    assert 1 in saved and 3 not in saved and not lost.exists()
    rc, _, err = run_cli([*EVAL, "--out", str(lost), "--resume"])
    assert rc == 0, err
    assert json.loads((lost / "shards.json").read_text())["reused"] == saved
    assert_same_run(lost, eval_reference, EVAL_FILES)
