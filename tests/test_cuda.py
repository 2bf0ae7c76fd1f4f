"""The same attacks and evaluation on a GPU: results stay on the device and agree with the CPU.

Skipped where no CUDA device is present (the CI machine); run on a lent GPU machine.
"""

from __future__ import annotations

import pytest
import torch

from advlab import attacks, data, zoo
from advlab.attacks.catalog import attack_classes
from advlab.evaluation import EvalConfig, evaluate
from advlab.threat import distance

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def digits() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    model = zoo.load("digits-cnn")
    x, y = data.load("digits:test")
    return model, x[:128], y[:128]


@pytest.mark.parametrize(
    "name", ["fgsm", "pgd", "mifgsm", "apgd", "apgd-t", "noise", "cw", "deepfool", "lbfgs", "onehot"]
)
def test_every_attack_runs_on_the_gpu_and_agrees_with_the_cpu(name: str, digits) -> None:
    model, x, y = digits
    cls = attack_classes()[name]
    kw = {"eps": 0.15} if "eps" in {f.name for f in __import__("dataclasses").fields(cls)} else {}
    atk = cls(**kw)
    target = 3 if name in ("onehot", "lbfgs") else None
    cpu = atk(model, x, y, target=target)
    gpu_model = zoo.load("digits-cnn", device="cuda")
    gpu = atk(gpu_model, x.cuda(), y.cuda(), target=target)
    assert gpu.x_adv.device.type == "cuda" and gpu.x_adv.dtype == x.dtype and gpu.logits.device.type == "cuda"
    assert float(gpu.x_adv.min()) >= 0 and float(gpu.x_adv.max()) <= 1
    if kw:
        assert (distance(gpu.x_adv - x.cuda(), atk.threat_norm) <= 0.15 + 1e-5).all()
    with torch.no_grad():
        pred = gpu_model(gpu.x_adv).argmax(1)
    assert torch.equal(pred.cpu(), gpu.prediction.cpu())
    # cuDNN and CPU kernels round differently; the outcomes must still agree on nearly every sample
    assert (gpu.success.cpu() == cpu.success).float().mean() >= 0.9
    assert abs(gpu.success_rate - cpu.success_rate) <= 0.08


def test_evaluate_on_the_gpu_matches_the_cpu(digits) -> None:
    model, x, y = digits
    config = EvalConfig(preset="fast", eps=0.1)
    cpu = evaluate(model, (x, y), config)
    gpu = evaluate(zoo.load("digits-cnn", device="cuda"), (x, y), config)
    assert gpu.clean_accuracy == cpu.clean_accuracy
    assert abs(gpu.robust_accuracy - cpu.robust_accuracy) <= 3 / len(x)


def test_seed_002_on_the_gpu_with_channels_last() -> None:
    model = zoo.load("efficientnet-lite0", device="cuda").to(memory_format=torch.channels_last)
    x, _, _ = data.load_for_model("samples", 224, 3)
    x = x.cuda().contiguous(memory_format=torch.channels_last)
    res = attacks.PGD(eps=2 / 255, alpha=0.5 / 255, steps=30, quantize=True)(
        model, x, torch.zeros(len(x), dtype=torch.long).cuda(), target=106
    )
    probs = model(res.x_adv).softmax(1)[:, 106]
    assert (probs > 0.9).all(), probs


def test_prototypes_on_the_gpu_match_the_cpu() -> None:
    from advlab import prototypes

    cfg = prototypes.Config(steps=150)
    cpu = prototypes.generate(zoo.load("digits-cnn"), "blank:gray", "all", cfg).evolution
    gpu = prototypes.generate(zoo.load("digits-cnn", device="cuda"), "blank:gray", "all", cfg).evolution
    assert gpu.x.device.type == "cpu"  # records come back to the host batch by batch
    assert (gpu.final_prob >= 0.99).all() and gpu.converged.all()
    assert (gpu.final_top1 == cpu.final_top1).all()
    assert (gpu.stopped - cpu.stopped).abs().max() <= 10
