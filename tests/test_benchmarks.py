"""The benchmarks run end to end with advlab alone: peers that do not import get a "not installed" row."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPT = BENCH / "pgd_speed.py"


def test_pgd_speed_quick_runs_without_peers(tmp_path: Path) -> None:
    # Shadow the peers with modules that fail to import, as on a machine without `bootstrap.sh bench`
    # (this also keeps the test fast: ART alone takes seconds to import). ~5 s; the timeout is a guard.
    for name in ("torchattacks", "foolbox", "art"):
        (tmp_path / f"{name}.py").write_text("raise ImportError('hidden by the test')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--models", "digits-cnn"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert re.search(r"^\s*advlab(\s+\d+\.\d+\s+\d+\.\d+x\s+\d+\.\d+x){2}\s+[01]\.\d+\s+11/10\b", out, re.M), out
    assert re.search(
        r"^\s*advlab x_adv only(\s+\d+\.\d+\s+\d+\.\d+x\s+\d+\.\d+x){2}\s+[01]\.\d+\s+10/10\b", out, re.M
    ), out
    assert re.search(
        r"^\s*eager loop \+ score(\s+\d+\.\d+\s+\d+\.\d+x\s+\d+\.\d+x){2}\s+[01]\.\d+\s+11/10\b", out, re.M
    ), out
    for peer in ("torchattacks", "foolbox", "art"):
        assert re.search(rf"^\s*{peer}\s+not installed", out, re.M), out


def test_prototype_speed_quick_runs() -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH / "prototype_speed.py"), "--quick", "--models", "digits-cnn"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    for row, work in (
        ("ideal \\(fwd \\+ bwd\\)", 2100),
        ("min, no convergence", 2100),
        ("max \\(double backprop\\)", 2100),
    ):
        assert re.search(rf"^\s*{row}\s+{work}\s+\d+\.\d+\s+\d+\.\d+\s+\d+\.\d+x", proc.stdout, re.M), proc.stdout


def run_bench(*argv: str, timeout: int = 180) -> str:
    """A benchmark script's stdout; it must exit 0."""
    proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_channels_last_quick_runs_and_reports_both_ratios() -> None:
    out = run_bench(str(BENCH / "channels_last.py"), "--quick")
    assert re.search(r"max \|logit diff\| \d\.\de-0[5-9]", out), out  # the layouts agree before anything is timed
    for kind in ("pgd-1", "fwd\\+bwd"):
        assert re.search(rf"^\s*{kind}: NCHW / channels_last\s+min \d+\.\d+x\s+median \d+\.\d+x", out, re.M), out


def test_eval_throughput_quick_runs_on_a_made_folder() -> None:
    out = run_bench(str(BENCH / "eval_throughput.py"), "--quick")
    assert "60 PNGs of 32x32" in out
    assert re.search(r"peak RSS \d+ MB after 6 images, \d+ MB after 60 \(robust accuracy", out), out
    m = re.search(r"evaluate folder / ideal fwd\+bwd images/s: min (\d+\.\d+)", out)
    assert m and 0 < float(m.group(1)) < 1, out  # PGD plus checks cost more than one gradient per image
    assert re.search(r"model-pass floor / evaluate time: (0\.\d+|1\.0\d)", out), out


def test_gpu_check_figures_run_tiny_on_the_cpu(tmp_path: Path) -> None:
    """The speed part of scripts/gpu_check.sh at batch 1 on the CPU, then its summary (figures.md)."""
    speed = tmp_path / "speed.json"
    run_bench(
        str(BENCH / "gpu_check.py"),
        "speed",
        "--device",
        "cpu",
        "--batch",
        "1",
        "--steps",
        "1",
        "--repeats",
        "1",
        "--json",
        str(speed),
    )
    (tmp_path / "steps.tsv").write_text("speed\t0\t12\n")
    figures = run_bench(str(BENCH / "gpu_check.py"), "summary", str(tmp_path))
    assert figures == (tmp_path / "figures.md").read_text()
    assert "| speed | 0 | 12 |" in figures
    rows = {r.split(" | ")[0].strip("| "): r for r in figures.splitlines() if r.startswith("| fp32") or "bf16" in r}
    assert set(rows) == {"fp32 nchw", "fp32 channels_last", "bf16 channels_last"}
    assert "| 1.0000 / 1.0000 |" in rows["fp32 channels_last"]  # a layout changes no gradient direction
