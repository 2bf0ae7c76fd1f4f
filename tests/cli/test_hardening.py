"""Issue 14 (inputs, models, attack options): what a new user or a hostile tester tried, as real CLI calls.

Bad input: exit code 2, exactly one line on stderr, no traceback, no run directory (or ``.partial``) left.
Good input that used to fail or lie: the run works and records what it really did.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from advlab import zoo
from advlab.attacks import APGD, FGSM, PGD
from advlab.attacks.catalog import make
from advlab.defenses.training import TrainConfig, TrainingDiverged, fit
from advlab.evaluation import EvalConfig, evaluate
from tests.cli.helpers import run_cli

DIGITS = ["--model", "digits-cnn", "--data", "digits:test", "--limit", "16"]

#: a user's model file: MNIST/digits-sized networks that declare no input_size / in_channels, and broken ones
MODELS = """
import torch
from torch import nn


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        return self.fc(self.conv(x).relu().flatten(1))


def net():
    torch.manual_seed(0)
    return Small()


def boom():
    raise ValueError("factory broke")


class Pair(Small):
    def forward(self, x):
        return super().forward(x), 1


def pair():
    return Pair()


class FirstOnly(Small):
    def forward(self, x):
        return super().forward(x)[:1]


def first_only():
    return FirstOnly()


def eight():
    m = Small()
    m.input_size = "eight"
    return m


class NaNs(Small):
    def forward(self, x):
        return super().forward(x) * float("nan")


def nans():
    return NaNs()
"""


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def _models(d: Path) -> Path:
    p = d / "models.py"
    p.write_text(MODELS)
    return p


def _unlabelled(d: Path, n: int = 12) -> Path:
    """Digits images without labels (a .npz with x only)."""
    from advlab import data

    x, _ = data.load("digits:test", limit=n)
    np.savez(d / "unlabelled.npz", x=x.numpy())
    return d / "unlabelled.npz"


def _digits_npz(d: Path, n: int = 16) -> Path:
    from advlab import data

    x, y = data.load("digits:test", limit=n)
    np.savez(d / "digits.npz", x=x.numpy(), y=y.numpy())
    return d / "digits.npz"


def _nan_weights(d: Path) -> Path:
    sd = {k: v.clone() for k, v in zoo.load("digits-cnn").net.state_dict().items()}  # type: ignore[union-attr]
    first = next(k for k, v in sd.items() if v.is_floating_point())
    sd[first].view(-1)[0] = float("nan")
    save_file(sd, str(d / "nan.safetensors"))
    return d / "nan.safetensors"


def _user(factory: str, command: str = "eval") -> Callable[[Path], list[str]]:
    def make_argv(d: Path) -> list[str]:
        spec = f"{_models(d)}:{factory}"
        data = f"tensors:{_digits_npz(d)}"
        if command == "classify":
            return ["classify", data, "--model", spec]
        if command == "attack":
            return ["attack", "--model", spec, "--data", data, "--attack", "pgd", "--eps", "0.1", "--steps", "2"]
        return ["eval", "--model", spec, "--data", data, "--eps", "0.1"]

    return make_argv


def _nan_weights_argv(command: str) -> Callable[[Path], list[str]]:
    def make_argv(d: Path) -> list[str]:
        w = str(_nan_weights(d))
        if command == "classify":
            return ["classify", "digits:test", "--model", "digits-cnn", "--weights", w, "--limit", "4"]
        if command == "attack":
            return ["attack", *DIGITS, "--weights", w, "--attack", "pgd", "--steps", "2"]
        return ["eval", *DIGITS, "--weights", w, "--eps", "0.1"]

    return make_argv


def _raises_on_import(d: Path) -> list[str]:
    (d / "bad.py").write_text('raise RuntimeError("boom")\n')
    return ["eval", "--model", f"{d / 'bad.py'}:net", "--data", "digits:test", "--eps", "0.1"]


def _train(*extra: str) -> Callable[[Path], list[str]]:
    return lambda d: [
        "train",
        "--model",
        "digits-cnn",
        "--data",
        "digits:train",
        "--limit",
        "200",
        "--epochs",
        "2",
        "--quiet",
        *extra,
    ]


REFUSED = [
    # silent wrong results: NaN / Inf in weights or logits
    pytest.param(_nan_weights_argv("classify"), "NaN", id="classify-nan-weights"),
    pytest.param(_nan_weights_argv("attack"), "NaN", id="attack-nan-weights"),
    pytest.param(_nan_weights_argv("eval"), "NaN", id="eval-nan-weights"),
    pytest.param(_user("nans", "classify"), "NaN", id="classify-nan-logits"),
    pytest.param(_user("nans", "attack"), "NaN", id="attack-nan-logits"),
    # unlabelled data without --labels predicted
    pytest.param(
        lambda d: ["eval", "--model", "digits-cnn", "--data", f"tensors:{_unlabelled(d)}", "--eps", "0.1"],
        "--labels predicted",
        id="eval-unlabelled",
    ),
    pytest.param(
        lambda d: ["attack", "--model", "digits-cnn", "--data", f"tensors:{_unlabelled(d)}", "--attack", "pgd"],
        "--labels predicted",
        id="attack-unlabelled",
    ),
    # options an attack does not take
    pytest.param(lambda d: ["attack", *DIGITS, "--attack", "fgsm", "--steps", "5"], "use pgd", id="fgsm-steps"),
    pytest.param(lambda d: ["attack", *DIGITS, "--attack", "fgsm", "--momentum", "0.9"], "mifgsm", id="fgsm-momentum"),
    pytest.param(
        lambda d: ["eval", *DIGITS, "--attack", "fgsm", "--eps", "0.1", "--steps", "5"], "use pgd", id="eval-fgsm-steps"
    ),
    # diverged training
    pytest.param(_train("--lr", "1e6"), "diverged", id="train-lr-1e6-exploded"),
    pytest.param(_train("--lr", "1e10"), "diverged", id="train-lr-1e10-nan"),
    # a user's model file that misbehaves
    pytest.param(_raises_on_import, "boom", id="model-file-raises-on-import"),
    pytest.param(_user("boom"), "factory broke", id="factory-raises"),
    pytest.param(_user("pair"), "tuple", id="forward-returns-tuple"),
    pytest.param(_user("first_only"), "batch of", id="forward-wrong-batch-size"),
    pytest.param(_user("eight"), "input_size", id="input-size-eight"),
    pytest.param(
        lambda d: ["eval", *DIGITS, "--input-size", "16", "--eps", "0.1"], "own model files", id="builtin-input-size"
    ),
    # devices
    pytest.param(lambda d: ["eval", *DIGITS, "--eps", "0.1", "--device", "banana"], "banana", id="eval-device-banana"),
    pytest.param(
        lambda d: ["attack", *DIGITS, "--attack", "pgd", "--device", "banana"], "banana", id="attack-device-banana"
    ),
]


@pytest.mark.parametrize(("make_argv", "says"), REFUSED)
def test_refused_with_one_line_exit_2_and_nothing_left(
    tmp_path: Path, make_argv: Callable[[Path], list[str]], says: str
) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    out = tmp_path / "out"
    rc, stdout, err = run_cli([*make_argv(inputs), "--out", str(out)])
    lines = err.strip().splitlines()
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("advlab") and "error" in lines[0], err
    assert says in lines[0], err
    assert "Traceback" not in err + stdout
    assert not out.exists() and not (tmp_path / "out.partial").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs"]


# ------------------------------------------------------------------------------------------ user model files
def test_a_digits_sized_model_file_is_probed_with_the_datas_shape(tmp_path: Path) -> None:
    spec = f"{_models(tmp_path)}:net"
    rc, stdout, err = run_cli(
        [
            "eval",
            "--model",
            spec,
            "--data",
            f"tensors:{_digits_npz(tmp_path)}",
            "--eps",
            "0.1",
            "--attack",
            "pgd",
            "--steps",
            "3",
            "--out",
            str(tmp_path / "e"),
            "--json",
        ]
    )
    assert rc == 0, err
    m = json.loads(stdout)
    assert m["n"] == 16
    info = zoo.load(spec, data_shape=(1, 8)).info  # type: ignore[union-attr]
    assert (info.channels, info.input_size, info.num_classes) == (1, 8, 10)


def test_input_size_and_channels_options_for_photos(tmp_path: Path) -> None:
    """Photos have no shape of their own (they are fitted to the model): --input-size/--channels say it."""
    spec = f"{_models(tmp_path)}:net"
    img = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)).save(img)
    rc, _, err = run_cli(["classify", str(img), "--model", spec])
    assert rc == 2 and "--input-size" in err and len(err.strip().splitlines()) == 1
    rc, stdout, err = run_cli(["classify", str(img), "--model", spec, "--input-size", "8", "--channels", "1", "--json"])
    assert rc == 0, err
    probs = [t["probability"] for t in json.loads(stdout)["predictions"][0]["top"]]
    assert len(probs) == 5 and 0 < sum(probs) <= 1 + 1e-6


# ------------------------------------------------------------------------------------------ labels
def test_eval_with_predicted_labels_on_unlabelled_data(tmp_path: Path) -> None:
    out = tmp_path / "e"
    rc, stdout, err = run_cli(
        [
            "eval",
            "--model",
            "digits-cnn",
            "--data",
            f"tensors:{_unlabelled(tmp_path)}",
            "--labels",
            "predicted",
            "--attack",
            "pgd",
            "--eps",
            "0.1",
            "--steps",
            "5",
            "--out",
            str(out),
            "--json",
        ]
    )
    assert rc == 0, err
    m = json.loads(stdout)
    assert m["clean_accuracy"] == 1.0 and m["n"] == 12  # the labels are the predictions
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["labels"] == "predicted" and json.loads((out / "config.json").read_text())["labels"] == "predicted"
    t = load_file(str(out / "adversarials.safetensors"))
    model = zoo.load("digits-cnn")
    with torch.no_grad():
        clean, adv = model(t["x"]).argmax(1), model(t["x_adv"]).argmax(1)
    assert torch.equal(t["y"], clean)
    assert m["robust_accuracy"] == pytest.approx(float((adv == clean).float().mean()))
    assert m["robust_accuracy"] < 1.0  # the attack really ran against those labels


def test_attack_with_predicted_labels_on_unlabelled_data(tmp_path: Path) -> None:
    out = tmp_path / "a"
    rc, stdout, err = run_cli(
        [
            "attack",
            "--model",
            "digits-cnn",
            "--data",
            f"tensors:{_unlabelled(tmp_path)}",
            "--labels",
            "predicted",
            "--attack",
            "pgd",
            "--eps",
            "0.15",
            "--steps",
            "10",
            "--out",
            str(out),
            "--json",
        ]
    )
    assert rc == 0, err
    m = json.loads(stdout)
    assert m["labels"] == "predicted" and m["clean_accuracy"] == 1.0 and m["success_rate"] > 0.3
    t = load_file(str(out / "adversarials.safetensors"))
    with torch.no_grad():
        adv = zoo.load("digits-cnn")(t["x_adv"]).argmax(1)
    assert torch.equal(t["success"].bool(), adv != t["y"])
    assert float((t["x_adv"] - t["x"]).abs().max()) <= 0.15 + 1e-6


# ------------------------------------------------------------------------------------------ attack configs
def test_config_and_metrics_record_the_step_size_used(tmp_path: Path) -> None:
    out = tmp_path / "a"
    rc, _, err = run_cli(
        ["attack", *DIGITS, "--attack", "pgd", "--eps", "0.1", "--steps", "4", "--out", str(out), "--quiet"]
    )
    assert rc == 0, err
    for name, key in (("config.json", "attack"), ("metrics.json", "config")):
        text = json.loads((out / name).read_text())[key]
        assert "alpha=0.0625" in text and "alpha=None" not in text  # 2.5 * 0.1 / 4
    out = tmp_path / "e"
    rc, _, err = run_cli(
        [
            "eval",
            "--model",
            "digits-cnn",
            "--data",
            "digits:test",
            "--limit",
            "8",
            "--attack",
            "mifgsm",
            "--eps",
            "0.3",
            "--steps",
            "5",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert rc == 0, err
    assert "alpha=0.06," in json.loads((out / "config.json").read_text())["attacks"][0]  # MI-FGSM: eps / steps
    assert "alpha=0.06," in json.loads((out / "metrics.json").read_text())["per_attack"][0]["config"]


def test_repr_shows_the_resolved_step_size_and_an_explicit_one() -> None:
    assert "alpha=0.0625" in repr(PGD(eps=0.1, steps=4))
    assert "alpha=0.01," in repr(PGD(eps=0.1, steps=4, alpha=0.01))
    assert "alpha=[0.025, 0.05]" in repr(PGD(eps=[0.1, 0.2], steps=10))
    assert "alpha" not in repr(FGSM(eps=0.1))
    with pytest.raises(Exception, match="use pgd"):
        make("fgsm", eps=0.1, steps=5)


# ------------------------------------------------------------------------------------------ model state
class _BNNet(torch.nn.Module):
    """A small BatchNorm classifier on 8x8 grey images."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(1, 6, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(6)
        self.drop = torch.nn.Dropout(0.0)
        self.fc = torch.nn.Linear(6 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(self.bn(self.conv(x)).relu()).flatten(1))


@pytest.mark.parametrize(
    "run",
    [
        pytest.param(lambda m, x, y: PGD(eps=0.1, steps=3)(m, x, y), id="pgd"),
        pytest.param(lambda m, x, y: PGD(eps=0.1, steps=3).perturb(m, x, y), id="pgd-perturb"),
        pytest.param(lambda m, x, y: FGSM(eps=0.1)(m, x, y, target="least-likely"), id="fgsm-least-likely"),
        pytest.param(lambda m, x, y: APGD(eps=0.1, steps=3)(m, x, y), id="apgd"),
        pytest.param(
            lambda m, x, y: evaluate(m, (x, y), EvalConfig(attacks=(PGD(eps=0.1, steps=2),), eps=0.1)), id="evaluate"
        ),
    ],
)
def test_attacks_and_evaluate_leave_a_train_mode_model_as_found(run: Callable[..., object]) -> None:
    from advlab import data

    model = _BNNet().train()
    model.drop.eval()  # a mixed-mode model: every flag must come back as it was
    x, y = data.load("digits:test", limit=16)
    with torch.no_grad():
        model(torch.rand(32, 1, 8, 8))  # running statistics that differ from the defaults
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = {n: m.training for n, m in model.named_modules()}
    run(model, x, y)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), [
        k for k in before if not torch.equal(before[k], after[k])
    ]
    assert {n: m.training for n, m in model.named_modules()} == modes


# ------------------------------------------------------------------------------------------ training
def test_fit_stops_when_the_loss_is_not_finite() -> None:
    from advlab import data

    x, y = data.load("digits:train", limit=128)
    model = zoo.load("digits-cnn", pretrained=False)
    with pytest.raises(TrainingDiverged, match="the loss is nan"):
        fit(model, x, y, TrainConfig(epochs=1, lr=1e10))


def test_an_ordinary_short_training_run_is_not_called_diverged(tmp_path: Path) -> None:
    rc, _, err = run_cli(["train", "--limit", "40", "--epochs", "1", "--quiet", "--out", str(tmp_path / "t")])
    assert rc == 0, err
    assert all(torch.isfinite(v).all() for v in load_file(str(tmp_path / "t" / "weights.safetensors")).values())


# ------------------------------------------------------------------------------------------ images
def test_attack_pngs_classify_back_to_the_adversarial_prediction(tmp_path: Path) -> None:
    """The PNGs `advlab attack --quantize` writes are at the model's input size: classify must not resize them."""
    out = tmp_path / "a"
    rc, _, err = run_cli(
        [
            "attack",
            *DIGITS,
            "--attack",
            "pgd",
            "--eps",
            "0.2",
            "--steps",
            "10",
            "--quantize",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert rc == 0, err
    rows = list(csv.DictReader((out / "samples.csv").open()))
    rc, stdout, err = run_cli(["classify", str(out / "adversarials"), "--model", "digits-cnn", "--json", "--top", "1"])
    assert rc == 0, err
    back = [p["top"][0]["class"] for p in json.loads(stdout)["predictions"]]
    assert back == [int(r["adv_pred"]) for r in rows]
    assert sum(r["success"] == "True" for r in rows) >= 4  # the check covers real adversarial examples
