"""``advlab eval --bpda FILE.py:factory``: a user's differentiable twin for what advlab cannot straight-through by
itself (preprocessing outside autograd): the attacks run on the twin, every success is confirmed on the model."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from advlab import data, zoo
from advlab.evaluation import EvalConfig, evaluate
from tests.cli.helpers import run_cli

MODELS = """
import torch
from advlab import zoo
from advlab.zoo.traps import NumpyLogits

def trap():  # the digits CNN served outside autograd, its logits through NumPy: no gradient path at all
    return NumpyLogits(zoo.load("digits-cnn")).eval()

def twin():  # the same function in torch
    return zoo.load("digits-cnn")

def wrong():
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3)).eval()
"""

ARGS = ["eval", "--data", "digits:test", "--limit", "64", "--preset", "fast", "--eps", "0.1", "--json", "-q"]


def test_a_twin_gives_the_white_box_number_confirmed_on_the_model(tmp_path: Path) -> None:
    (tmp_path / "models.py").write_text(MODELS)
    spec = str(tmp_path / "models.py")
    rc, out, err = run_cli([*ARGS, "--model", f"{spec}:trap", "--out", str(tmp_path / "alone")])
    assert rc == 0, err
    alone = json.loads(out)
    # no gradient path: on an 8x8 digit the gradients are taken by central differences, and the number is a bound
    assert alone["attacks"] == ["apgd-ce", "apgd-dlr"] and alone["trust"] == "low"
    assert any("central differences" in w for w in alone["warnings"])
    rc, out, err = run_cli(
        [*ARGS, "--model", f"{spec}:trap", "--bpda", f"{spec}:twin", "--out", str(tmp_path / "twin")]
    )
    assert rc == 0, err
    through = json.loads(out)
    assert through["attacks"] == ["apgd-ce", "apgd-dlr"]  # gradient attacks, on the twin
    config = json.loads((tmp_path / "twin" / "config.json").read_text())
    assert config["bpda"] == f"{spec}:twin"
    # the reference: the same attacks on the differentiable twin itself (the same function)
    x, y = data.load("digits:test")
    reference = evaluate(
        zoo.load(f"{spec}:twin", data_shape=(1, 8)), (x[:64], y[:64]), EvalConfig(preset="fast", eps=0.1)
    )
    assert abs(through["robust_accuracy"] - reference.robust_accuracy) <= 0.02
    assert through["trust"] == "high"  # an adaptive white-box attack through an exact twin
    trap = zoo.load(f"{spec}:trap", data_shape=(1, 8))  # every success counted was confirmed on the trap itself
    t = load_file(str(tmp_path / "twin" / "adversarials.safetensors"))
    with torch.no_grad():
        still = trap(t["x_adv"]).argmax(1) == t["y"]
    broken = t["broken_by"] >= 0
    assert bool(broken.any()) and not bool(still[broken].any())
    assert float((t["x_adv"] - t["x"]).abs().amax()) <= 0.1 + 1e-6


def test_a_twin_that_does_not_fit_is_refused_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "models.py").write_text(MODELS)
    spec = str(tmp_path / "models.py")
    out = tmp_path / "run"
    rc, _, err = run_cli([*ARGS, "--model", f"{spec}:trap", "--bpda", f"{spec}:wrong", "--out", str(out)])
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "--bpda" in err and "Traceback" not in err
    assert not out.exists() and not any(tmp_path.glob("*.partial"))
