"""One label mapping for the library and the CLI: a folder of digits named by class (3/ and 7/, as ImageFolder
lays them out) is read with the labels 3 and 7, by class name, not 0 and 1 by folder order. Before the mapping
moved to :func:`advlab.data.labels_for_model`, ``evaluate`` on such a folder measured 0% clean accuracy and
``advlab eval`` 100%."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from advlab import attacks, data, zoo
from advlab.evaluation import EvalConfig, evaluate, metrics
from tests.cli.helpers import run_cli

#: the classes written to the folder, and how many test digits of each
CLASSES, PER_CLASS = (3, 7), 6


@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """folder/3/*.png and folder/7/*.png: the first test digits of each class as 8-bit grey 8x8 PNGs."""
    from PIL import Image

    root = tmp_path_factory.mktemp("labels") / "digits"
    x, y = data.load("digits:test")
    for c in CLASSES:
        (root / str(c)).mkdir(parents=True)
        for k, i in enumerate((y == c).nonzero().flatten()[:PER_CLASS].tolist()):
            pixels = (x[i, 0] * 255).round().to(torch.uint8).numpy()
            Image.fromarray(pixels, mode="L").save(root / str(c) / f"{k}.png")
    return root


def test_the_data_layer_maps_folder_labels_by_class_name(digit_folder: Path) -> None:
    """Measured: the digits CNN gets all 12 right by name, none by folder order (the old library number)."""
    spec = f"folder:{digit_folder}"
    x, by_order, desc = data.load_for_model(spec, 8, 1)
    assert desc.class_names == ["3", "7"] and by_order.tolist() == [0] * PER_CLASS + [1] * PER_CLASS
    _, by_name, _ = data.load_for_model(spec, 8, 1, model_classes=zoo.info("digits-cnn").class_names)
    assert by_name.tolist() == [3] * PER_CLASS + [7] * PER_CLASS
    with torch.no_grad():
        pred = zoo.load("digits-cnn")(x).argmax(1)
    assert metrics.accuracy(by_name, pred) >= 0.9 and metrics.accuracy(by_order, pred) == 0.0


def test_the_library_and_the_cli_agree_on_a_folder_named_by_class(digit_folder: Path, tmp_path: Path) -> None:
    spec = f"folder:{digit_folder}"
    model = zoo.load("digits-cnn")
    report = evaluate(model, spec, EvalConfig(attacks=(attacks.FGSM(eps=0.1),), eps=0.1, norm="linf"))
    argv = ["eval", "--model", "digits-cnn", "--data", spec, "--attack", "fgsm", "--eps", "0.1"]
    rc, out, err = run_cli([*argv, "--json", "--out", str(tmp_path / "eval")])
    assert rc == 0, err
    cli = json.loads(out)
    assert report.clean_accuracy == cli["clean_accuracy"]
    assert report.robust_accuracy == cli["robust_accuracy"]
    assert report.clean_accuracy >= 0.9  # measured 1.0 (12 of 12), robust accuracy 0.75 at FGSM 0.1
