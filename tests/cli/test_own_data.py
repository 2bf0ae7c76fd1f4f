"""Your model, your data (issue 23): a model file with no class names and no input size, on an ImageFolder of
32x32 PNGs. classify, attack, eval and the library's ``evaluate`` read the same labels (the sorted folder index, as
torchvision's ImageFolder), give the model 32x32 inputs (recorded by a forward hook), and measure the clean accuracy
plain PyTorch computes (PIL -> tensor / 255 -> argmax against the folder index)."""

from __future__ import annotations

import json
import runpy
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from advlab import attacks, zoo
from advlab.evaluation import EvalConfig, evaluate
from tests.cli.helpers import run_cli

#: the class folders (sorted: their folder index is the label) and the colour each shape is drawn in
SHAPES = {"circle": (230, 30, 30), "cross": (30, 230, 30), "square": (30, 30, 230), "triangle": (200, 200, 200)}
PER_CLASS = 3

#: a 4-class CNN with global average pooling: no class_names, no input_size, no in_channels. Its weights are set
#: by hand: output k < 3 is the mean of colour channel k, output 3 is 0.9 x the mean brightness, so it sees red,
#: green and blue shapes right and calls the grey triangles class 0 (a tie of 0.78 over 0.70): accuracy 9/12.
MODEL = """
import torch
from torch import nn


class TinyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 4)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.bias.zero_()
            for k in range(3):
                self.conv.weight[k, k, 1, 1] = 1.0
                self.conv.weight[3, k, 1, 1] = 0.3
            self.fc.weight.copy_(torch.eye(4))
            self.fc.bias.zero_()

    def forward(self, x):
        return self.fc(self.pool(torch.relu(self.conv(x))).flatten(1))


def build():
    return TinyCNN()
"""


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(the folder, the model spec): PER_CLASS 32x32 PNGs per class, each shape shifted a little."""
    root = tmp_path_factory.mktemp("own")
    for name, colour in SHAPES.items():
        (root / "shapes" / name).mkdir(parents=True)
        for i in range(PER_CLASS):
            img = Image.new("RGB", (32, 32))
            ImageDraw.Draw(img).rectangle((3 + 2 * i, 5, 22 + 2 * i, 27), fill=colour)
            img.save(root / "shapes" / name / f"{name}{i}.png")
    (root / "tiny.py").write_text(MODEL)
    return root / "shapes", f"{root / 'tiny.py'}:build"


def plain_pytorch(folder: Path, model_file: str) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(labels, predictions, accuracy) without advlab: sorted folder index, PIL -> float / 255, argmax."""
    net = runpy.run_path(model_file.rpartition(":")[0])["build"]().eval()
    xs, ys = [], []
    for k, d in enumerate(sorted(p for p in folder.iterdir() if p.is_dir())):
        for f in sorted(d.iterdir()):
            xs.append(torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1).float() / 255)
            ys.append(k)
    with torch.no_grad():
        pred = net(torch.stack(xs)).argmax(1)
    y = torch.tensor(ys)
    return y, pred, float((pred == y).float().mean())


@pytest.fixture
def seen() -> Iterator[list[tuple[int, ...]]]:
    """The shapes of the images every TinyCNN forward receives (a global forward hook, removed afterwards); the
    all-zero batch zoo.load sends to count the outputs of a model file is no image and is left out."""
    shapes: list[tuple[int, ...]] = []

    def hook(module: torch.nn.Module, inputs: tuple, output: object) -> None:
        if type(module).__name__ == "TinyCNN" and bool(inputs[0].any()):
            shapes.append(tuple(inputs[0].shape))

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    yield shapes
    handle.remove()


def test_plain_pytorch_reference_is_not_trivial(own: tuple[Path, str]) -> None:
    y, pred, acc = plain_pytorch(*own)
    assert acc == 0.75 and pred[y == 3].tolist() == [0] * PER_CLASS  # the grey triangles are missed


def test_classify_uses_the_folder_index_and_32x32_inputs(own: tuple[Path, str], seen: list) -> None:
    folder, spec = own
    y, _, acc = plain_pytorch(folder, spec)
    rc, out, err = run_cli(["classify", f"folder:{folder}", "--model", spec, "--top", "1", "--json"])
    assert rc == 0, err
    result = json.loads(out)
    assert [p["label"] for p in result["predictions"]] == y.tolist()
    assert result["metrics"]["top1_accuracy"] == acc
    assert seen and all(s[1:] == (3, 32, 32) for s in seen)


def test_attack_eval_and_the_library_agree_with_plain_pytorch(
    own: tuple[Path, str], seen: list, tmp_path: Path
) -> None:
    folder, spec = own
    _, _, acc = plain_pytorch(folder, spec)
    data = f"folder:{folder}"
    rc, out, err = run_cli(
        [
            "attack",
            "--model",
            spec,
            "--data",
            data,
            "--attack",
            "fgsm",
            "--eps",
            "0.03",
            "--json",
            "-o",
            str(tmp_path / "a"),
        ]
    )
    assert rc == 0, err
    assert json.loads(out)["clean_accuracy"] == acc
    argv = ["eval", "--model", spec, "--data", data, "--attack", "fgsm", "--eps", "0.03", "--json"]
    rc, out, err = run_cli([*argv, "-o", str(tmp_path / "e")])
    assert rc == 0, err
    assert json.loads(out)["clean_accuracy"] == acc
    report = evaluate(zoo.load(spec), data, EvalConfig(attacks=(attacks.FGSM(eps=0.03),), eps=0.03, norm="linf"))
    assert report.clean_accuracy == acc
    assert seen and {s[1:] for s in seen} == {(3, 32, 32)}, sorted(set(seen))


def test_data_shows_the_size_the_model_sees(own: tuple[Path, str]) -> None:
    folder, spec = own
    rc, out, err = run_cli(["data", f"folder:{folder}", "--model", spec, "--json"])
    assert rc == 0, err
    shown = json.loads(out)
    assert shown["size"] == [32, 32] and shown["label_source"] == "folder order" and shown["notes"] == []


def test_class_names_file_maps_by_name(own: tuple[Path, str], tmp_path: Path) -> None:
    """Names in another order than the folders': labels follow the names, and so does the accuracy."""
    folder, spec = own
    names = tmp_path / "classes.txt"
    names.write_text("square\ncircle\ncross\ntriangle\n")  # the model's output 0 is "square"
    rc, out, err = run_cli(
        ["classify", f"folder:{folder}", "--model", spec, "--class-names", str(names), "--top", "1", "--json"]
    )
    assert rc == 0, err
    result = json.loads(out)
    by_folder = {"circle": 1, "cross": 2, "square": 0, "triangle": 3}
    assert [p["label"] for p in result["predictions"]] == [by_folder[n] for n in SHAPES for _ in range(PER_CLASS)]
    assert result["predictions"][0]["label_name"] == "circle"
    # outputs 0..2 are the red, green, blue means: now circles (red) are called "square", blue squares "cross"
    assert result["metrics"]["top1_accuracy"] == 0.0


def test_partial_match_is_one_note_and_no_match_cannot_attack(own: tuple[Path, str], tmp_path: Path) -> None:
    folder, spec = own
    partial = tmp_path / "partial.txt"
    partial.write_text("circle\ncross\nhexagon\nstar\n")
    rc, out, err = run_cli(["classify", f"folder:{folder}", "--model", spec, "--class-names", str(partial), "--json"])
    assert rc == 0, err
    notes = [line for line in err.splitlines() if line.startswith("advlab:")]
    assert len(notes) == 1 and "'square', 'triangle'" in notes[0] and "unlabelled" in notes[0]
    assert json.loads(out)["metrics"]["labelled"] == 2 * PER_CLASS
    other = tmp_path / "other.txt"
    other.write_text("a\nb\nc\nd\n")
    argv = ["eval", "--model", spec, "--data", f"folder:{folder}", "--class-names", str(other), "--attack", "fgsm"]
    rc, _, err = run_cli([*argv, "--eps", "0.03", "-o", str(tmp_path / "e")])
    assert rc == 2 and "no labels" in err and "--class-names" in err and "--labels predicted" in err
    assert all(line.startswith(("advlab:", "advlab eval: error:")) for line in err.strip().splitlines())


def test_class_names_count_mismatch_is_one_line(own: tuple[Path, str], tmp_path: Path) -> None:
    folder, spec = own
    three = tmp_path / "three.txt"
    three.write_text("a\nb\nc\n")
    rc, _, err = run_cli(["classify", f"folder:{folder}", "--model", spec, "--class-names", str(three)])
    assert rc == 2 and "4 outputs but 3 class names" in err and len(err.strip().splitlines()) == 1


def test_mixed_sizes_ask_for_an_input_size(own: tuple[Path, str], tmp_path: Path) -> None:
    _, spec = own
    mixed = tmp_path / "mixed"
    for k, side in enumerate((32, 40)):
        (mixed / f"c{k}").mkdir(parents=True)
        Image.new("RGB", (side, side), (10, 200, 30)).save(mixed / f"c{k}" / "a.png")
    rc, _, err = run_cli(["classify", f"folder:{mixed}", "--model", spec])
    assert rc == 2 and "different sizes" in err and "--input-size" in err and len(err.strip().splitlines()) == 1
    rc, out, err = run_cli(["classify", f"folder:{mixed}", "--model", spec, "--input-size", "36", "--json"])
    assert rc == 0, err
    assert "upscaled" in err  # the 32x32 image: one note line
