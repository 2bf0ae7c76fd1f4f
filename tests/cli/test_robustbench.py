"""``advlab eval --robustbench FILE``: a RobustBench-style model_info entry, consistent with metrics.json."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from tests.cli.helpers import run_cli

ARGS = [
    "eval",
    "--model",
    "digits-cnn",
    "--data",
    "digits:test",
    "--limit",
    "64",
    "--preset",
    "fast",
    "--eps",
    "8/255",
    "-q",
]


def test_robustbench_entry_matches_the_run(tmp_path: Path) -> None:
    rc, out, err = run_cli([*ARGS, "--out", str(tmp_path / "run"), "--robustbench", str(tmp_path / "entry.json")])
    assert rc == 0, err
    assert "(trust: high)" in out and "per image" in out
    entry = json.loads((tmp_path / "entry.json").read_text())
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert entry["name"] == "digits-cnn" and entry["dataset"] == "digits" and entry["threat_model"] == "Linf"
    assert entry["eps"] == "8/255" and entry["number_forward_passes"] == 1 and entry["n_examples"] == 64
    assert entry["clean_acc"] == f"{100 * metrics['clean_accuracy']:.2f}"
    assert entry["robust_acc"] == f"{100 * metrics['robust_accuracy']:.2f}"
    assert "autoattack_acc" not in entry  # advlab's number is not AutoAttack's
    assert entry["trust"] == metrics["trust"] == "high"
    assert entry["attack_backward_passes_per_image"] == metrics["backwards_per_image"] > 1  # the attacks took gradients
    assert (
        len(entry["attacks"]) == 3 and entry["attacks"][0].startswith("APGD(") and "loss='dlr'" in entry["attacks"][1]
    )
    assert entry["diagnostics"] == {"warnings": [], "adaptations": []}


def test_robustbench_into_a_missing_directory_makes_it(tmp_path: Path) -> None:
    rc, _, err = run_cli([*ARGS, "--out", str(tmp_path / "run"), "--robustbench", str(tmp_path / "new" / "entry.json")])
    assert rc == 0, err
    assert json.loads((tmp_path / "new" / "entry.json").read_text())["n_examples"] == 64


def test_robustbench_onto_a_link_or_fifo_is_refused_before_any_work(tmp_path: Path) -> None:
    """The entry is written as a regular file only: a symbolic link or a FIFO there is neither replaced nor
    written through, and the refusal comes before the evaluation (no run directory appears)."""
    (tmp_path / "real.json").write_text("keep")
    (tmp_path / "link.json").symlink_to(tmp_path / "real.json")
    os.mkfifo(tmp_path / "pipe.json")
    for name in ("link.json", "pipe.json"):
        rc, _, err = run_cli([*ARGS, "--out", str(tmp_path / "run"), "--robustbench", str(tmp_path / name)])
        assert rc == 2 and err.count("\n") == 1 and "will not replace it" in err, err
        assert not list(tmp_path.glob("run*"))
    assert (tmp_path / "link.json").is_symlink() and (tmp_path / "real.json").read_text() == "keep"
    assert stat.S_ISFIFO(os.lstat(tmp_path / "pipe.json").st_mode)


def test_robustbench_names_a_model_file_by_its_stem_and_factory_and_makes_every_missing_folder(tmp_path: Path) -> None:
    """The entry's name is the model's, never the user's folders: ``some/where/net.py:make`` is ``net-make``, the
    name metrics.json gives the model; the entry's missing folders (two levels) are made."""
    where = tmp_path / "some" / "where"
    where.mkdir(parents=True)
    (where / "net.py").write_text("from advlab import zoo\n\n\ndef make():\n    return zoo.load('digits-cnn')\n")
    entry_path = tmp_path / "entries" / "digits" / "net.json"
    argv = [*ARGS, "--out", str(tmp_path / "run"), "--robustbench", str(entry_path)]
    argv[argv.index("digits-cnn")] = f"{where / 'net.py'}:make"
    rc, _, err = run_cli(argv)
    assert rc == 0, err
    entry = json.loads(entry_path.read_text())
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert entry["name"] == metrics["model"] == "net-make" and str(tmp_path) not in json.dumps(entry)
    assert entry["n_examples"] == 64


def test_robustbench_under_a_file_is_refused_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("keep")
    rc, _, err = run_cli([*ARGS, "--out", str(tmp_path / "run"), "--robustbench", str(tmp_path / "plain" / "e.json")])
    assert rc == 2 and err.count("\n") == 1 and "a folder on its path is a file" in err, err
    assert not list(tmp_path.glob("run*")) and (tmp_path / "plain").read_text() == "keep"
