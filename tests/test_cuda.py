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


def test_zoo_layouts_agree_on_the_gpu() -> None:
    """lite0 loads channels_last (``memory_format="auto"``); on the GPU its logits and input gradients match the
    NCHW model's and the CPU's (cuDNN may use TF32 for convolutions: tolerances are relative, 1e-2)."""
    x, _, _ = data.load_for_model("samples", 224, 3)
    y = torch.zeros(len(x), dtype=torch.long)
    out = {}
    for device, fmt in (("cpu", "contiguous"), ("cuda", "auto"), ("cuda", "contiguous")):
        model = zoo.load("efficientnet-lite0", device=device, memory_format=fmt)
        xg = x.to(device).requires_grad_(True)
        logits = model(xg)
        (grad,) = torch.autograd.grad(torch.nn.functional.cross_entropy(logits, y.to(device)), xg)
        out[device, fmt] = (logits.detach().cpu(), grad.cpu())
    ref_logits, ref_grad = out["cpu", "contiguous"]
    for logits, grad in out.values():
        assert torch.equal(logits.argmax(1), ref_logits.argmax(1))
        assert float((logits - ref_logits).abs().max()) <= 1e-2 * float(ref_logits.abs().max())
        cosine = torch.nn.functional.cosine_similarity(grad.flatten(), ref_grad.flatten(), dim=0)
        assert float(cosine) >= 0.99


def test_bfloat16_autocast_on_the_gpu_keeps_float32_logits_and_the_gradient_direction() -> None:
    """``zoo.Autocast`` (what ``--amp`` runs the attacks on): float32 logits, the same top-1 on the photos, and an
    input gradient pointing nearly the way the float32 one does (cosine 0.82 was measured on the CPU)."""
    model = zoo.load("efficientnet-lite0", device="cuda")
    x, _, _ = data.load_for_model("samples", 224, 3)
    x = x.cuda()
    grads, top1 = [], []
    for m in (model, zoo.Autocast(model)):
        xg = x.clone().requires_grad_(True)
        logits = m(xg)
        assert logits.dtype == torch.float32
        (g,) = torch.autograd.grad(torch.nn.functional.cross_entropy(logits, logits.argmax(1).detach()), xg)
        grads.append(g.flatten())
        top1.append(logits.argmax(1))
    assert torch.equal(top1[0], top1[1])
    assert float(torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0)) >= 0.5


def test_evaluate_streams_an_image_folder_onto_the_gpu(tmp_path) -> None:  # noqa: ANN001 - pytest's tmp_path
    """A folder of PNGs evaluated by a model on the GPU: the same clean accuracy as on the CPU, robust accuracy
    within a few images (cuDNN rounding)."""
    from PIL import Image

    x, _, _ = data.load_for_model("samples", 64, 3)
    photos = tmp_path / "photos"
    for i in range(24):  # class k: sample photo k, as is, flipped, dimmed
        k = i % len(x)
        img = [x[k], x[k].flip(2), 0.7 * x[k]][(i // len(x)) % 3]
        (photos / str(k)).mkdir(parents=True, exist_ok=True)
        Image.fromarray((img.permute(1, 2, 0) * 255).round().byte().numpy()).save(photos / str(k) / f"{i}.png")
    config = EvalConfig(attacks=(attacks.PGD(eps=2 / 255, steps=3),), eps=2 / 255, batch_size=8, sanity=False)
    model_file = tmp_path / "net.py"
    model_file.write_text(
        "import torch\ndef make():\n    torch.manual_seed(0)\n"
        "    m = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, 2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),\n"
        "        torch.nn.Flatten(), torch.nn.Linear(8, 4))\n    m.input_size = 64\n    return m\n"
    )
    spec = f"{model_file}:make"
    cpu = evaluate(zoo.load(spec), f"folder:{photos}", config)
    gpu = evaluate(zoo.load(spec, device="cuda"), f"folder:{photos}", config)
    assert gpu.n == cpu.n == 24
    assert gpu.clean_accuracy == cpu.clean_accuracy
    assert abs(gpu.robust_accuracy - cpu.robust_accuracy) <= 2 / 24
