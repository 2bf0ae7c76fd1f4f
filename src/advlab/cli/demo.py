"""``advlab demo``: the embedded end-to-end job (offline, CPU, a few minutes) that leaves a run directory with
pictures. "Research note 000" and "002" are two of the research notes the project was built from (prototypes; the
wombat attack), not RNG seeds."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

import torch

from advlab import attacks, data, prototypes, runs, zoo
from advlab.cli.classify import predict
from advlab.cli.common import add_command, add_run_args, command_line, say
from advlab.evaluation import EvalConfig, evaluate
from advlab.evaluation.metrics import accuracy, top_k_accuracy


def register(sub: argparse._SubParsersAction, flags: argparse.ArgumentParser) -> None:
    p = add_command(
        sub,
        flags,
        "demo",
        help="the embedded end-to-end job (offline, minutes on a CPU)",
        description="Run advlab's embedded job on the data and models that ship with it (no downloads, no GPU):\n"
        "EfficientNet-Lite0 on scikit-image's photos and the digits CNN on scikit-learn's digits, then research\n"
        "note 002's attack (every photo becomes a wombat at L-inf 2/255), a robustness evaluation of the digits CNN\n"
        "and research note 000's prototypes (a grey image evolved into every digit).\n"
        "Leaves runs/demo/ with metrics.json, pictures and report.html.\n\n"
        "examples:\n  advlab demo\n  advlab demo --out runs/demo2 --force\n  advlab demo --threads 2 --force",
    )
    add_run_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """The demo's five steps (:func:`_steps`), at the torch threads ``advlab`` chose (:mod:`advlab.cli.threads`)."""
    out = args.out or "runs/demo"
    threads = torch.get_num_threads()
    with runs.start(out, {"command": command_line(args.argv), "threads": threads}, force=args.force) as run_dir:
        metrics = _steps(run_dir)
    say(args, f"digits-cnn accuracy on digits:test: {metrics[_DIGITS_ACCURACY]:.2%}")
    say(args, f"efficientnet-lite0 on the sample photos: top-3 accuracy {metrics[_TOP3]:.0%}")
    say(
        args,
        f"research note 002: {metrics[_WOMBAT_RATE]:.0%} of the photos became wombats at L-inf 2/255 "
        "(8-bit PNGs stay adversarial)",
    )
    say(args, f"digits-cnn robust accuracy at L-inf 0.1 (fast preset): {metrics[_ROBUST]:.2%}")
    say(
        args,
        f"research note 000: {metrics[_P99]} of 10 digit prototypes evolved from a grey image reach p >= 0.99",
    )
    say(args, f"wrote {out}/report.html ({threads} torch thread{'s' if threads > 1 else ''}; --threads sets them)")
    return 0


#: what each of the demo's pictures shows (the report's captions)
CAPTIONS = {
    "photos_efficientnet-lite0.png": "EfficientNet-Lite0 on scikit-image's photos: each photo with its two most "
    "likely ImageNet classes.",
    "digits_digits-cnn.png": "The digits CNN on 24 of the 599 test digits: label -> prediction (red: wrong).",
    "wombat_efficientnet-lite0.png": "Research note 002: every photo turned into a wombat by targeted PGD at L-inf "
    "2/255 on the 8-bit grid: the clean photo, the perturbation (amplified to be visible) and the adversarial photo "
    "with its prediction.",
    "robustness_digits-cnn.png": "Digits the fast preset broke at L-inf 0.1: clean digit, amplified perturbation, "
    "adversarial digit.",
    "prototypes_digits-cnn.png": "Research note 000: a prototype of each digit evolved from a blank grey image until "
    "the input gradient vanished, with its probability and the step it first became top-1.",
}


def _steps(run_dir: runs.Run) -> dict[str, Any]:
    """The five steps, each leaving a picture; metrics.json and report.html; returns the metrics."""
    from advlab.report import write_report

    photos = _photos(run_dir)
    digits = _digits(run_dir)
    wombat = _wombat(run_dir, photos)
    robust = _robustness(run_dir, digits)
    protos = _prototypes(run_dir, digits)
    metrics = {**photos.metrics, **wombat, **robust, **protos, **digits.metrics, "samples": photos.samples}
    run_dir.save_json("metrics.json", metrics)
    write_report(run_dir.path, "advlab demo", captions=CAPTIONS)
    return metrics


_DIGITS_ACCURACY = "digits-cnn digits:test accuracy"
_TOP3 = "efficientnet-lite0 samples top-3 accuracy"
_WOMBAT_RATE = "efficientnet-lite0 wombat attack success rate (linf 2/255, 8-bit)"
_ROBUST = "digits-cnn robust accuracy (fast preset, linf 0.1)"
_P99 = "digits-cnn prototypes from blank:gray reaching p >= 0.99"


@dataclass(frozen=True)
class _Part:
    """A model and its data as the demo's later steps use them, with the metrics found on the way."""

    model: torch.nn.Module
    x: torch.Tensor
    y: torch.Tensor
    titles: list[str]
    metrics: dict[str, Any]
    samples: dict[str, Any] | None = None


def _photos(run_dir: runs.Run) -> _Part:
    """EfficientNet-Lite0's top-3 on scikit-image's photos (photos_efficientnet-lite0.png)."""
    from advlab.report import image_grid

    lite = zoo.load("efficientnet-lite0")
    info = zoo.info_of(lite)
    x, y = data.load("samples", info.input_size)
    names = data.item_names("samples")
    p_top, i_top = predict(lite, x, 8).topk(3, dim=1)
    classes = info.class_names
    titles = [
        f"{n}: " + ", ".join(f"{classes[int(c)]} {float(p):.0%}" for p, c in zip(ps[:2], cs[:2], strict=True))
        for n, ps, cs in zip(names, p_top, i_top, strict=True)
    ]
    run_dir.save_figure("photos_efficientnet-lite0.png", image_grid(x, titles, ncols=4, cell=3.0))
    metrics = {
        "efficientnet-lite0 samples top-1 accuracy": accuracy(y, i_top[:, 0]),
        _TOP3: top_k_accuracy(y, i_top),
    }
    samples = {
        n: {"label": classes[int(t)], "top3": [classes[int(c)] for c in cs]}
        for n, t, cs in zip(names, y, i_top, strict=True)
    }
    return _Part(lite, x, y, titles, metrics, samples)


def _digits(run_dir: runs.Run) -> _Part:
    """The digits CNN's accuracy on digits:test (digits_digits-cnn.png: 24 of them, wrong ones in red)."""
    from advlab.report import image_grid

    digits = zoo.load("digits-cnn")
    xd, yd = data.load("digits:test")
    pd = predict(digits, xd, 512).argmax(1)
    show = torch.arange(0, len(yd), len(yd) // 24)[:24]
    titles = [f"label {int(yd[i])} -> {int(pd[i])}" for i in show]
    colors = ["green" if pd[i] == yd[i] else "red" for i in show]
    run_dir.save_figure("digits_digits-cnn.png", image_grid(xd[show], titles, ncols=8, cell=1.2, title_colors=colors))
    return _Part(
        digits,
        xd,
        yd,
        titles,
        {_DIGITS_ACCURACY: accuracy(yd, pd), "digits:test images": len(yd)},
    )


def _wombat(run_dir: runs.Run, photos: _Part) -> dict[str, float]:
    """Research note 002: targeted PGD at L-inf 2/255 turns every photo into a wombat (ImageNet class 106), kept on the
    8-bit grid so that the saved pictures stay adversarial (wombat_efficientnet-lite0.png)."""
    from advlab.report import adversarial_grid

    info = zoo.info_of(photos.model)
    classes = info.class_names
    wombat = classes.index("wombat")
    res = attacks.PGD(eps=2 / 255, steps=30, quantize=True)(photos.model, photos.x, photos.y, target=wombat)
    p_adv = res.logits.float().softmax(1)
    adv_t = [f"adversarial: {classes[int(c)]} {float(p_adv[i, c]):.0%}" for i, c in enumerate(res.prediction)]
    run_dir.save_figure(
        "wombat_efficientnet-lite0.png",
        adversarial_grid(photos.x, res.x_adv, [f"clean: {t}" for t in photos.titles], adv_t),
    )
    return {
        _WOMBAT_RATE: res.success_rate,
        "efficientnet-lite0 wombat probability (min over photos)": float(p_adv[:, wombat].min()),
    }


def _robustness(run_dir: runs.Run, digits: _Part) -> dict[str, float]:
    """The digits CNN's robust accuracy under the fast preset at L-inf 0.1 (robustness_digits-cnn.png: broken
    samples)."""
    from advlab.report import adversarial_grid

    report = evaluate(
        digits.model, (digits.x, digits.y), EvalConfig(preset="fast", eps=0.1, norm="linf", keep_adversarials=True)
    )
    broken = report.samples.broken.nonzero().flatten()[:6]
    if len(broken) and report.x_adv is not None:
        adv_p = report.samples.adv_pred[broken]
        run_dir.save_figure(
            "robustness_digits-cnn.png",
            adversarial_grid(
                digits.x[broken],
                report.x_adv[broken],
                [f"clean: {int(digits.y[i])}" for i in broken],
                [f"adversarial: {int(c)}" for c in adv_p],
                cell=1.6,
            ),
        )
    return {_ROBUST: report.robust_accuracy}


def _prototypes(run_dir: runs.Run, digits: _Part) -> dict[str, float]:
    """Research note 000: a prototype of every digit, evolved from a blank grey image (min mode: until the gradient
    vanishes)."""
    from advlab.report import image_grid

    pe = prototypes.generate(
        digits.model, "blank:gray", "all", prototypes.Config(mode="min", steps=200), strip_pairs=[]
    ).evolution
    rp = prototypes.recognition_points(pe)
    titles = [
        f"{int(t)}: p={float(p):.2f}\ntop-1 at step {int(s)}"
        for t, p, s in zip(pe.target, pe.final_prob, rp["top1_step"], strict=True)
    ]
    run_dir.save_figure("prototypes_digits-cnn.png", image_grid(pe.x, titles, ncols=10, cell=1.4))
    return {
        _P99: int((pe.final_prob >= 0.99).sum()),
        "digits-cnn prototypes: median L2 from the start when recognized (top-1)": float(rp["top1_l2"].nanmedian()),
    }
