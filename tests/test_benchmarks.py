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
