"""Scaling of sharded work: throughput with N processes (torchrun, gloo, 1 thread each) over 1 process.

Two workloads, each cut into units as ``torchrun -m advlab ...`` cuts it (:mod:`advlab.distributed`):

* ``eval``: :func:`advlab.evaluate` with the fast preset (APGD-CE + APGD-DLR, 20 steps each, L-inf eps 0.1)
  on the first 576 digits of ``digits:test``, batches of 32 (18 units); throughput in images per second;
* ``prototypes``: :func:`advlab.prototypes.generate` from 8 test digits towards all 10 classes, 100 steps,
  batches of 10 pairs (8 units); throughput in (start, target) steps per second.

"compute": every process loads the model and data and warms up, then all start together (a barrier) on
their own units; the time is the slowest process's, so start-up, loading and the merge are left out.
The merged result (rank 0 joins every unit through the process group) is checked against the 1-process
run. "end to end": the wall time of the whole ``torchrun -m advlab eval ...`` command, start-up, model
loading, merge and writing the run directory included, for the same evaluation.

ratio = throughput(N) / throughput(1); efficiency = ratio / N (1.0 is perfect). On a machine with as many
idle cores as processes the ideal ratio is N; other load on the machine shows up as a lower ratio.

    python benchmarks/scaling.py                  # 1 vs 2 processes, 3 repeats (a few minutes on 2 cores)
    python benchmarks/scaling.py --quick          # smaller workloads, 1 repeat
    python benchmarks/scaling.py --procs 1,2,4 --repeats 5 --json scaling.json
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
#: workload -> (full settings, --quick settings)
EVAL = {"limit": 576, "batch": 32, "eps": 0.1}
EVAL_QUICK = {"limit": 128, "batch": 32, "eps": 0.1}
PROTO = {"starts": 8, "steps": 100, "batch": 10}
PROTO_QUICK = {"starts": 4, "steps": 30, "batch": 10}


# ------------------------------------------------------------------------------------------------ a worker
def _worker(workload: str, quick: bool, result: str) -> None:
    """One rank under torchrun: load, warm up, wait for all, time this rank's units, merge on rank 0."""
    import torch.distributed as td

    from advlab import data, distributed, evaluate, prototypes, zoo
    from advlab.evaluation import EvalConfig
    from advlab.work import Work

    torch.set_num_threads(1)
    dist = distributed.setup()
    model = zoo.load("digits-cnn")
    parts: dict[int, Any] = {}
    if workload == "eval":
        s = EVAL_QUICK if quick else EVAL
        x, y = data.load("digits:test", limit=s["limit"])
        cfg = EvalConfig(preset="fast", eps=s["eps"], batch_size=s["batch"])
        evaluate(model, (x[:8], y[:8]), cfg)  # warm-up, untimed

        def run() -> None:
            evaluate(model, (x, y), cfg, work=Work(in_shard=dist.owns, on_done=parts.__setitem__))

        def merge(done: dict[int, Any]) -> tuple[float, dict[str, Any]]:
            rep = evaluate(model, (x, y), cfg, work=Work(done=done))
            return float(len(x)), {
                "robust_accuracy": rep.robust_accuracy,
                "clean_accuracy": rep.clean_accuracy,
                "broken_by": rep.samples.broken_by.tolist(),
            }
    else:
        s = PROTO_QUICK if quick else PROTO
        starts = prototypes.parse_start("digits:test", 1, 8, limit=s["starts"])
        config = prototypes.Config(steps=s["steps"])
        prototypes.generate(model, starts.x[:1], [0, 1], prototypes.Config(steps=3), batch_size=2)  # warm-up

        def run() -> None:
            prototypes.generate(
                model,
                starts,
                "all",
                config,
                batch_size=s["batch"],
                work=Work(in_shard=dist.owns, on_done=parts.__setitem__),
            )

        def merge(done: dict[int, Any]) -> tuple[float, dict[str, Any]]:
            res = prototypes.generate(model, starts, "all", config, batch_size=s["batch"], work=Work(done=done))
            return float((res.evolution.stopped + 1).sum()), {
                "x_sum": float(res.x.double().sum()),
                "summary": res.summary(),
            }

    dist.barrier()
    t0 = time.perf_counter()
    run()
    seconds = time.perf_counter() - t0
    shards: list[Any] = [None] * dist.world_size
    if dist.distributed:
        td.all_gather_object(shards, (seconds, parts))
    else:
        shards = [(seconds, parts)]
    if dist.is_main():
        done = {b: p for _, ps in shards for b, p in ps.items()}
        work, check = merge(done)
        Path(result).write_text(
            json.dumps(
                {
                    "seconds": max(s for s, _ in shards),
                    "per_rank": [s for s, _ in shards],
                    "work": work,
                    "units": len(done),
                    "check": check,
                }
            )
        )
    distributed.teardown()


# ------------------------------------------------------------------------------------------------ the driver
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _torchrun(nproc: int, argv: list[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={nproc}",
        "--nnodes=1",
        "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}",
        *argv,
    ]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def compute(workload: str, nproc: int, quick: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        cmd = _torchrun(
            nproc,
            [
                str(Path(__file__).resolve()),
                "--worker",
                workload,
                "--result",
                str(result),
                *(["--quick"] if quick else []),
            ],
        )
        proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=ROOT)
        if proc.returncode != 0:
            raise SystemExit(f"{workload} with {nproc} processes failed:\n{proc.stderr[-3000:]}")
        return json.loads(result.read_text())


def end_to_end(nproc: int, quick: bool) -> tuple[float, dict[str, Any]]:
    s = EVAL_QUICK if quick else EVAL
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        argv = [
            "-m",
            "advlab",
            "eval",
            "--model",
            "digits-cnn",
            "--data",
            "digits:test",
            "--limit",
            str(s["limit"]),
            "--preset",
            "fast",
            "--eps",
            str(s["eps"]),
            "--batch-size",
            str(s["batch"]),
            "--out",
            str(out),
            "--json",
            "-q",
        ]
        t0 = time.perf_counter()
        proc = subprocess.run(_torchrun(nproc, argv), capture_output=True, text=True, env=_env(), cwd=ROOT)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"advlab eval with {nproc} processes failed:\n{proc.stderr[-3000:]}")
        metrics = json.loads((out / "metrics.json").read_text())
        return wall, {"robust_accuracy": metrics["robust_accuracy"], "clean_accuracy": metrics["clean_accuracy"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--procs", default="1,2", help="process counts to compare (the first is the baseline)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per row (interleaved; the median is reported)")
    ap.add_argument("--workloads", default="eval,prototypes,end-to-end")
    ap.add_argument("--quick", action="store_true", help="smaller workloads, 1 repeat")
    ap.add_argument("--json", help="also write the numbers to this file")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        _worker(args.worker, args.quick, args.result)
        return
    procs = [int(p) for p in args.procs.split(",")]
    repeats = 1 if args.quick else args.repeats
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    print(
        f"scaling: torch {torch.__version__}, {os.cpu_count()} CPUs, 1 thread per process, gloo on loopback; "
        f"load average {os.getloadavg()[0]:.2f}; {repeats} run(s) per row, interleaved, median"
    )
    report: dict[str, Any] = {"procs": procs, "repeats": repeats, "cpus": os.cpu_count(), "rows": []}
    header = (
        f"{'workload':<34}{'procs':>6}{'units':>7}{'seconds':>10}{'throughput':>17}{'ratio':>11}{'efficiency':>12}"
        "  merged = 1 process"
    )
    print(header)
    print("-" * len(header))
    for w in workloads:
        times: dict[int, list[float]] = {n: [] for n in procs}
        info: dict[int, dict[str, Any]] = {}
        for _ in range(repeats):
            for n in procs:
                if w == "end-to-end":
                    wall, check = end_to_end(n, args.quick)
                    times[n].append(wall)
                    info[n] = {
                        "check": check,
                        "units": "-",
                        "work": float((EVAL_QUICK if args.quick else EVAL)["limit"]),
                    }
                else:
                    r = compute(w, n, args.quick)
                    times[n].append(r["seconds"])
                    info[n] = r
        base = None
        for n in procs:
            sec = statistics.median(times[n])
            tput = info[n]["work"] / sec
            unit = "pair-steps/s" if w == "prototypes" else "img/s"
            base = base or tput
            same = "yes" if info[n]["check"] == info[procs[0]]["check"] else "NO"
            ev, pr = (EVAL_QUICK, PROTO_QUICK) if args.quick else (EVAL, PROTO)
            label = {
                "eval": f"eval fast preset, {ev['limit']} digits",
                "prototypes": f"prototypes, {pr['starts'] * 10} pairs x {pr['steps']} st.",
                "end-to-end": f"torchrun -m advlab eval, {ev['limit']}",
            }.get(w, w)
            ratio = tput / base
            print(
                f"{label if n == procs[0] else '':<34}{n:>6}{info[n]['units']!s:>7}{sec:>10.2f}{tput:>10.1f} {unit:<13}"
                f"{ratio:>7.2f}x{ratio / (n / procs[0]):>11.0%}  {same}"
            )
            report["rows"].append(
                {
                    "workload": w,
                    "procs": n,
                    "seconds": times[n],
                    "median_seconds": sec,
                    "throughput": tput,
                    "ratio": ratio,
                    "efficiency": ratio / (n / procs[0]),
                    "same_result": same == "yes",
                }
            )
    print(f"load average now {os.getloadavg()[0]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
