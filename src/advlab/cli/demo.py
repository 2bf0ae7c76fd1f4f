"""``advlab demo``: the embedded end-to-end job (offline, CPU, a few minutes) that leaves a run directory with pictures."""

from __future__ import annotations

import argparse

import torch

from advlab import attacks, data, evaluate, prototypes, runs, zoo
from advlab.cli.classify import predict
from advlab.cli.common import Formatter, add_run_args, command_line, say


def register(sub: argparse._SubParsersAction, flags: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "demo", parents=[flags], formatter_class=Formatter, help="the embedded end-to-end job (offline, minutes on a CPU)",
        description="Run advlab's embedded job on the data and models that ship with it (no downloads, no GPU):\n"
        "EfficientNet-Lite0 on scikit-image's photos and the digits CNN on scikit-learn's digits, then seed 002's\n"
        "attack (every photo becomes a wombat at L-inf 2/255), a robustness evaluation of the digits CNN and\n"
        "seed 000's prototypes (a grey image evolved into every digit).\n"
        "Leaves runs/demo/ with metrics.json, pictures and report.html.\n\n"
        "examples:\n  advlab demo\n  advlab demo --out runs/demo2 --force",
    )
    add_run_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from advlab.report import adversarial_grid, image_grid, write_report

    out = args.out or "runs/demo"
    with runs.start(out, {"command": command_line(args.argv)}, force=args.force) as run_dir:
        lite = zoo.load("efficientnet-lite0")
        x, y = data.load("samples", lite.info.input_size)  # type: ignore[union-attr]
        names = data.item_names("samples")
        probs = predict(lite, x, 8)
        p_top, i_top = probs.topk(3, dim=1)
        classes = lite.info.class_names  # type: ignore[union-attr]
        titles = [f"{n}: " + ", ".join(f"{classes[int(c)]} {float(p):.0%}" for p, c in zip(ps[:2], cs[:2])) for n, ps, cs in zip(names, p_top, i_top)]
        run_dir.save_figure("photos_efficientnet-lite0.png", image_grid(x, titles, ncols=4, cell=3.0))
        in_top3 = (i_top == y[:, None]).any(1)

        digits = zoo.load("digits-cnn")
        xd, yd = data.load("digits:test")
        pd = predict(digits, xd, 512).argmax(1)
        show = torch.arange(0, len(yd), len(yd) // 24)[:24]
        titles_d = [f"label {int(yd[i])} -> {int(pd[i])}" for i in show]
        colors = ["green" if pd[i] == yd[i] else "red" for i in show]
        run_dir.save_figure("digits_digits-cnn.png", image_grid(xd[show], titles_d, ncols=8, cell=1.2, title_colors=colors))
        # seed 002: targeted PGD at L-inf 2/255 turns every photo into a wombat (ImageNet class 106), kept on the
        # 8-bit grid so that the saved pictures stay adversarial
        wombat = classes.index("wombat")
        res = attacks.PGD(eps=2 / 255, steps=30, quantize=True)(lite, x, y, target=wombat)
        p_adv = res.logits.float().softmax(1)
        adv_t = [f"adversarial: {classes[int(c)]} {float(p_adv[i, c]):.0%}" for i, c in enumerate(res.prediction)]
        run_dir.save_figure("wombat_efficientnet-lite0.png", adversarial_grid(x, res.x_adv, [f"clean: {t}" for t in titles], adv_t))

        report = evaluate(digits, (xd, yd), preset="fast", eps=0.1, norm="linf", keep_adversarials=True)
        broken = report.samples.broken.nonzero().flatten()[:6]
        if len(broken) and report.x_adv is not None:
            adv_p = report.samples.adv_pred[broken]
            run_dir.save_figure("robustness_digits-cnn.png", adversarial_grid(
                xd[broken], report.x_adv[broken], [f"clean: {int(yd[i])}" for i in broken], [f"adversarial: {int(c)}" for c in adv_p], cell=1.6))  # fmt: skip

        # seed 000: a prototype of every digit, evolved from a blank grey image (min mode: until the gradient vanishes)
        protos = prototypes.generate(digits, "blank:gray", "all", prototypes.Config(mode="min", steps=200), strip_pairs=[])
        pe = protos.evolution
        rp = prototypes.recognition_points(pe)
        titles_p = [f"{int(t)}: p={float(p):.2f}\ntop-1 at step {int(s)}" for t, p, s in zip(pe.target, pe.final_prob, rp["top1_step"])]
        run_dir.save_figure("prototypes_digits-cnn.png", image_grid(pe.x, titles_p, ncols=10, cell=1.4))

        metrics = {
            "efficientnet-lite0 samples top-1 accuracy": float((i_top[:, 0] == y).float().mean()),
            "efficientnet-lite0 wombat attack success rate (linf 2/255, 8-bit)": res.success_rate,
            "efficientnet-lite0 wombat probability (min over photos)": float(p_adv[:, wombat].min()),
            "digits-cnn robust accuracy (fast preset, linf 0.1)": report.robust_accuracy,
            "digits-cnn prototypes from blank:gray reaching p >= 0.99": int((pe.final_prob >= 0.99).sum()),
            "digits-cnn prototypes: median L2 from the start when recognized (top-1)": float(rp["top1_l2"].nanmedian()),
            "efficientnet-lite0 samples top-3 accuracy": float(in_top3.float().mean()),
            "digits-cnn digits:test accuracy": float((pd == yd).float().mean()),
            "digits:test images": len(yd),
            "samples": {n: {"label": classes[int(t)], "top3": [classes[int(c)] for c in cs]} for n, t, cs in zip(names, y, i_top)},
        }
        run_dir.save_json("metrics.json", metrics)
        write_report(run_dir.path, "advlab demo")
    say(args, f"digits-cnn accuracy on digits:test: {metrics['digits-cnn digits:test accuracy']:.2%}")
    say(args, f"efficientnet-lite0 on the sample photos: top-3 accuracy {metrics['efficientnet-lite0 samples top-3 accuracy']:.0%}")
    say(args, f"seed 002: {res.success_rate:.0%} of the photos became wombats at L-inf 2/255 (8-bit PNGs stay adversarial)")
    say(args, f"digits-cnn robust accuracy at L-inf 0.1 (fast preset): {report.robust_accuracy:.2%}")
    say(args, f"seed 000: {metrics['digits-cnn prototypes from blank:gray reaching p >= 0.99']} of 10 digit prototypes evolved from a grey image reach p >= 0.99")
    say(args, f"wrote {out}/report.html")
    return 0
