"""What ``advlab eval`` prints and report.html shows first: the headline (robust accuracy with its Wilson interval
over the samples counted), the trust and why, robust accuracy per class, then the details; and its grouped --help."""

from __future__ import annotations

import json
import re
from pathlib import Path

from advlab.evaluation.metrics import wilson_interval
from tests.cli.helpers import run_cli


def test_eval_prints_and_reports_the_headline_then_per_class_then_details(tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = ["eval", "--model", "digits-cnn", "--data", "digits:test", "--limit", "40", "--preset", "fast"]
    rc, stdout, err = run_cli([*argv, "--eps", "0.1", "--out", str(out), "-q"])
    assert rc == 0, err
    m = json.loads((out / "metrics.json").read_text())
    hits, n = m["headline"]["hits"], m["headline"]["samples"]
    assert n == 40 and hits / n == m["robust_accuracy"] and 0 < hits < n  # eps 0.1 breaks some digits, not all
    low, high = wilson_interval(hits, n)
    lines = stdout.splitlines()
    assert lines[0] == (
        f"robust accuracy {hits / n:.2%} (95% interval {low:.2%} to {high:.2%}; {hits} of 40 labelled samples), "
        "linf eps 0.1"
    )
    assert lines[1] == "trust: high (every check passed)"
    assert lines[3] == "per class:" and all(re.match(rf"  {c} +robust ", lines[4 + c]) for c in range(10))
    # each class's line is that class's robust accuracy in metrics.json
    for c, row in enumerate(m["per_class"]):
        assert row["class"] == c and f"robust {row['robust_accuracy']:7.2%}" in lines[4 + c]
    assert sum(r["samples"] for r in m["per_class"]) == 40
    assert lines[15].startswith("40 samples, linf eps=0.1") and "(trust: high)" in stdout  # then the details
    page = (out / "report.html").read_text()
    order = [page.index(s) for s in ("<h2>Summary", "robust accuracy ", "<h2>Per class", "<h2>Metrics")]
    assert order == sorted(order)


def test_eval_help_puts_the_common_options_first_and_each_attacks_under_its_name() -> None:
    rc, text, _ = run_cli(["eval", "--help"])
    assert rc == 0
    headings = [line for line in text.splitlines() if line and not line.startswith(" ") and line.endswith(":")]
    attacks = ["fgsm", "pgd", "mifgsm", "apgd", "apgd-t", "nes", "spsa", "square", "cw", "ddn", "deepfool"]
    attacks += ["fmn", "lbfgs", "noise", "onehot"]
    for name in attacks:
        assert any(h.startswith(f"{name}: ") for h in headings), name
    first_attack = text.index("\nfgsm: ")
    for common in ("--model", "--data", "--preset", "--limit", "--out", "--device", "--robustbench"):
        assert text.index(common) < first_attack, common
    # an option only one attack takes is under that attack's heading; one several share is in the shared group
    assert text.index("\ncw: ") < text.index("--kappa") < text.index("\nddn: ")
    assert text.index("attack options shared") < text.index("  --steps") < first_attack
    assert text.splitlines()[0].startswith("usage: advlab eval --model SPEC --data SPEC")


def test_the_help_table_of_the_attacks_is_the_attacks_own_fields() -> None:
    """--help lists each attack's options from a table (so that --help imports no attack): it must say exactly
    which of the CLI's attack options each registered attack takes."""
    from advlab.attacks.catalog import attack_classes, options
    from advlab.cli.common import ATTACK_HELP, ATTACK_OPTIONS

    cli = {dest for _, dest, _, _ in ATTACK_OPTIONS} | {"random_start"}
    assert list(ATTACK_HELP) == list(attack_classes())
    for name, cls in attack_classes().items():
        assert set(ATTACK_HELP[name][1]) == options(cls) & cli, name
    assert {d for _, takes in ATTACK_HELP.values() for d in takes} == cli  # every option is some attack's
