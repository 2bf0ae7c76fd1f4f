"""``advlab eval`` streams its data: peak memory does not grow with the number of images, a run's adversarial
examples are written batch by batch and equal what one in-memory pass gives, and the library's ``evaluate`` reads a
spec batch by batch too."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from tests.cli.helpers import run_cli

#: a 3-class CNN with global pooling, no class names and no input size: takes images of any size. Its last layer has
#: no bias: with one, the untrained net's bias outweighs every image, nothing in the box changes its class, the
#: unconstrained-failure check fires and Square (5,000 queries) runs on every correct sample (right, but minutes)
NET = textwrap.dedent(
    """
    import torch
    from torch import nn

    def make():
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3, bias=False),
        )
    """
)


def _photos(root: Path, n: int, side: int, seed: int = 0) -> Path:
    """``n`` random RGB PNGs of ``side`` x ``side`` in three class folders (the same images for the same seed)."""
    rng = np.random.default_rng(seed)
    for c in ("a", "b", "c"):
        (root / c).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        Image.fromarray(img).save(root / "abc"[i % 3] / f"{i:05d}.png", compress_level=0)
    return root


def _net(tmp_path: Path) -> str:
    path = tmp_path / "net.py"
    path.write_text(NET)
    return f"{path}:make"


def test_eval_writes_adversarials_batch_by_batch_equal_to_one_pass(tmp_path: Path) -> None:
    """The streamed run's adversarials.safetensors holds every image and its adversarial example in data order; its
    x_adv classified by the model gives exactly the robust accuracy reported, and the images equal the files."""
    data = _photos(tmp_path / "photos", 10, 16)
    model = _net(tmp_path)
    out = tmp_path / "run"
    argv = ["eval", "--model", model, "--data", f"folder:{data}", "--attack", "fgsm", "--eps", "0.05"]
    rc, _, err = run_cli([*argv, "--batch-size", "4", "--out", str(out), "--quiet"])
    assert rc == 0, err
    saved = load_file(str(out / "adversarials.safetensors"))
    metrics = json.loads((out / "metrics.json").read_text())
    files = sorted(data.glob("*/*.png"))
    x = torch.stack([torch.from_numpy(np.array(Image.open(f))).permute(2, 0, 1).float() / 255 for f in files])
    assert torch.equal(saved["x"], x)
    assert saved["x_adv"].shape == x.shape and float((saved["x_adv"] - x).abs().max()) <= 0.05 + 1e-6
    import importlib.util

    spec = importlib.util.spec_from_file_location("net", tmp_path / "net.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    net = mod.make().eval()
    with torch.no_grad():
        hits = int((net(saved["x_adv"]).argmax(1) == saved["y"]).sum())
    assert hits / len(x) == pytest.approx(metrics["robust_accuracy"], abs=1e-12)
    rc, _, err = run_cli([*argv, "--batch-size", "10", "--out", str(tmp_path / "one"), "--quiet"])
    assert rc == 0, err
    one = load_file(str(tmp_path / "one" / "adversarials.safetensors"))
    assert torch.equal(one["x_adv"], saved["x_adv"]) and torch.equal(one["y"], saved["y"])


def _peak_mib(args: list[str]) -> float:
    """Peak resident memory (MiB) of ``advlab ARGS`` run in a fresh process."""
    probe = (
        "import resource, sys; from advlab.cli import main; rc = main(sys.argv[1:]); "
        "print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)"
    )
    done = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stdout.split("PEAK")[-1].split()[0]) / 1024


@pytest.mark.slow
def test_eval_peak_memory_does_not_grow_with_the_number_of_images(tmp_path: Path) -> None:
    """The issue's bound: peak memory of `advlab eval` on 3,000 photos is at most 1.3x its peak on 300. At 64x64
    the 3,000 images and their adversarial examples are ~290 MiB in float32, so a run that held them would be well
    over the bound (a torch process starts at ~300 MiB)."""
    model = _net(tmp_path)
    peaks = {}
    for n in (300, 3000):
        data = _photos(tmp_path / f"p{n}", n, 64)
        argv = ["eval", "--model", model, "--data", f"folder:{data}", "--attack", "fgsm", "--eps", "0.03"]
        peaks[n] = _peak_mib([*argv, "--batch-size", "100", "--out", str(tmp_path / f"r{n}"), "--quiet"])
    assert peaks[3000] <= 1.3 * peaks[300], peaks


def test_eval_and_attack_read_only_the_subset_or_sample_asked_for(tmp_path: Path) -> None:
    """--subset FILE keeps the images it names (in data order), --sample N a seeded random N: the same seed gives
    the same images, another seed others; samples.csv names exactly those images."""
    import csv

    data = _photos(tmp_path / "photos", 12, 8)
    model = _net(tmp_path)
    wanted = ["00007.png", "b/00004.png", "00009.png"]
    (tmp_path / "subset.txt").write_text("\n".join(wanted) + "\n")

    def images(command: str, out: str, *extra: str) -> list[str]:
        argv = [command, "--model", model, "--data", f"folder:{data}", "--attack", "fgsm", "--eps", "0.05"]
        rc, _, err = run_cli([*argv, *extra, "--out", str(tmp_path / out), "--quiet"])
        assert rc == 0, err
        with open(tmp_path / out / "samples.csv") as f:
            return [row.get("name") or row["image"] for row in csv.DictReader(f)]

    # data order: class folder a (00009), then b (00004, 00007)
    assert images("eval", "s", "--subset", str(tmp_path / "subset.txt")) == [
        "a/00009.png",
        "b/00004.png",
        "b/00007.png",
    ]
    assert images("attack", "sa", "--subset", str(tmp_path / "subset.txt")) == [
        "a/00009.png",
        "b/00004.png",
        "b/00007.png",
    ]
    first = images("eval", "r1", "--sample", "5", "--seed", "1")
    assert len(set(first)) == 5 and first == images("eval", "r2", "--sample", "5", "--seed", "1")
    assert first != images("eval", "r3", "--sample", "5", "--seed", "2")
    (tmp_path / "missing.txt").write_text("nope.png\n")
    rc, _, err = run_cli(
        [
            "eval",
            "--model",
            model,
            "--data",
            f"folder:{data}",
            "--eps",
            "0.1",
            "--subset",
            str(tmp_path / "missing.txt"),
        ]
    )
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "nope.png" in err, err


def test_attack_norms_are_those_of_the_successes_the_rate_counts(tmp_path: Path) -> None:
    """An image the model already gets wrong is no success of the attack: the median norms in metrics.json are
    over the clean-correct images the attack broke (here a random 3-class net is right on about a third)."""
    import csv

    data = _photos(tmp_path / "photos", 12, 8)
    out = tmp_path / "a"
    argv = ["attack", "--model", _net(tmp_path), "--data", f"folder:{data}", "--attack", "pgd", "--eps", "0.3"]
    rc, _, err = run_cli([*argv, "--steps", "5", "--out", str(out), "--quiet"])
    assert rc == 0, err
    m = json.loads((out / "metrics.json").read_text())
    with open(out / "samples.csv") as f:
        rows = list(csv.DictReader(f))
    counted = sorted(float(r["linf"]) for r in rows if r["success"] == "True" and r["label"] == r["clean_pred"])
    wrong = [r for r in rows if r["label"] != r["clean_pred"]]
    assert wrong and m["success_rate"] == pytest.approx(len(counted) / (len(rows) - len(wrong)))
    expected = round(counted[(len(counted) - 1) // 2], 6) if counted else None
    assert m["linf_median"] == expected
