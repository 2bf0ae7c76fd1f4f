"""``advlab prototypes``: the defaults give all ten digit prototypes, the run directory holds what it claims,
an interrupted run resumes to the same result, judges score the prototypes, bad input is one line."""

from __future__ import annotations

import csv
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from advlab import zoo
from advlab.data import load
from advlab.defenses import training as train
from advlab.zoo.digits import DigitsCNN
from tests.cli.helpers import run_cli


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for k, v in attrs:
            if k in ("src", "href") and v:
                self.refs.append(v)


def test_defaults_give_all_ten_prototypes_and_a_report(tmp_path: Path) -> None:
    out = tmp_path / "protos"
    rc, stdout, err = run_cli(["prototypes", "--model", "digits-cnn", "--start", "blank:gray", "--out", str(out)])
    assert rc == 0, err
    assert "10 reached p >= 0.99" in stdout
    names = {p.name for p in out.iterdir()}
    assert {
        "config.json",
        "metrics.json",
        "prototypes.safetensors",
        "trajectories.csv",
        "grid.png",
        "strips.png",
        "probability.png",
        "grad_norm.png",
        "recognition.png",
        "report.html",
    } <= names
    assert not [n for n in names if n.startswith("batch_")]
    t = load_file(str(out / "prototypes.safetensors"))
    x, targets = t["x"], t["target"]
    assert x.shape == (10, 1, 8, 8) and targets.tolist() == list(range(10))
    with torch.no_grad():
        p = zoo.load("digits-cnn")(x).softmax(1)
    assert (p.argmax(1) == targets).all() and (p.max(1).values >= 0.99).all()
    m = json.loads((out / "metrics.json").read_text())
    assert m["summary"]["reached_p99"] == 10 and m["summary"]["recognition_top1"]["pairs"] == 10
    assert m["self"]["top1_agreement"] == 1.0 and m["self"]["inception_score"] > 9.9
    assert m["target_steps"] == int((t["stopped"] + 1).sum()) and m["target_steps_per_second"] > 0
    rows = list(csv.DictReader((out / "trajectories.csv").open()))
    assert len(rows) == m["target_steps"]
    first = [r for r in rows if r["pair"] == "3"]
    assert [int(r["step"]) for r in first] == list(range(len(first)))
    assert float(first[-1]["target_probability"]) >= 0.99 and first[-1]["target_name"] == "3"
    # the report opens standalone: every picture and file it names is in the directory and every PNG is real
    page = (out / "report.html").read_text()
    refs = _Refs()
    refs.feed(page)
    pngs = [r for r in refs.refs if r.endswith(".png")]
    assert {"grid.png", "strips.png", "probability.png", "recognition.png"} <= set(pngs)
    for r in refs.refs:
        assert "://" not in r and (out / r).is_file()
    for r in pngs:
        assert (out / r).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Recognition points" in page
    rc, _, err = run_cli(["prototypes", "--model", "digits-cnn", "--out", str(out)])
    assert rc == 2 and "--force" in err  # an existing run is never overwritten silently


def test_default_run_name_follows_the_seed_convention(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    rc, _, err = run_cli(
        [
            "prototypes",
            "--model",
            "digits-cnn",
            "--targets",
            "0-1",
            "--steps",
            "5",
            "--eps",
            "0.1",
            "--alpha",
            "0.001",
            "-q",
        ]
    )
    assert rc == 0, err
    [made] = (tmp_path / "runs").iterdir()  # the seed-000 stem, then a hash of every other setting
    assert (
        made.name.startswith("digits-cnn_digits-min-blank_pgd_eps0.1_alpha0.001_") and (made / "metrics.json").exists()
    )


def _fresh_then_interrupted(
    args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, at_call: int
) -> tuple[str, dict[str, int]]:
    """Run ``args`` to ``tmp_path/fresh`` (its JSON output returned), then again to ``tmp_path/r`` with Ctrl-C at the
    ``at_call``-th batch evolved: exit 130, a hint to --resume, only ``r.partial`` left. ``calls["n"]`` counts the
    batches evolved from then on (the interrupt fires only at exactly ``at_call``)."""
    from advlab import prototypes

    rc, fresh, err = run_cli([*args, "--out", str(tmp_path / "fresh")])
    assert rc == 0, err
    real = prototypes.evolve
    calls = {"n": 0}

    def interrupted(*a, **k):  # noqa: ANN002, ANN003
        calls["n"] += 1
        if calls["n"] == at_call:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(prototypes.generator, "evolve", interrupted)  # generate calls evolve from its module
    rc, _, err = run_cli([*args, "--out", str(tmp_path / "r")])
    assert rc == 130 and "--resume" in err and not (tmp_path / "r").exists()
    return fresh, calls


def test_resume_after_an_interrupt_gives_the_same_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:

    args = [
        "prototypes",
        "--model",
        "digits-cnn",
        "--start",
        "digits:test",
        "--limit",
        "3",
        "--steps",
        "60",
        "--jitter",
        "1",
        "--batch-size",
        "10",
        "--json",
    ]
    fresh, calls = _fresh_then_interrupted(args, tmp_path, monkeypatch, at_call=2)
    out = tmp_path / "r"
    partial = tmp_path / "r.partial"
    assert [p.name for p in partial.glob("batch_*.safetensors")] == ["batch_00000.safetensors"]
    # the partial run is usable: what is done so far is written, and says so
    m = json.loads((partial / "metrics.json").read_text())
    assert m["partial"] is True and m["summary"]["pairs"] == 10
    assert (partial / "grid.png").exists() and "interrupted" in (partial / "report.html").read_text()
    calls["n"] = -100
    rc, resumed, err = run_cli([*args, "--out", str(out), "--resume"])
    assert rc == 0, err
    assert calls["n"] == -100 + 2  # the two batches not saved
    a, b = load_file(str(out / "prototypes.safetensors")), load_file(str(tmp_path / "fresh" / "prototypes.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (out / "trajectories.csv").read_text() == (tmp_path / "fresh" / "trajectories.csv").read_text()
    ja, jb = json.loads(resumed), json.loads(fresh)
    assert ja["summary"] == jb["summary"]


def test_compare_units_are_saved_and_an_interrupted_compare_resumes_to_the_same_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--compare's batches are units of the same job: with 2 batches per recipe, units 0-1 are the run's and 2-3
    the compared recipe's; an interrupt in unit 3 keeps units 0-2, and --resume evolves unit 3 alone."""

    args = [
        "prototypes",
        "--model",
        "digits-cnn",
        "--targets",
        "0-3",
        "--steps",
        "20",
        "--batch-size",
        "2",
        "--compare",
        "natural",
        "--json",
    ]
    fresh, calls = _fresh_then_interrupted(args, tmp_path, monkeypatch, at_call=4)
    out = tmp_path / "r"
    partial = tmp_path / "r.partial"
    saved = sorted(p.name for p in partial.glob("batch_*.safetensors"))
    assert saved == [f"batch_0000{u}.safetensors" for u in range(3)]  # the run's two batches and one compared
    assert json.loads((partial / "metrics.json").read_text())["summary"]["pairs"] == 4  # the run's pairs only
    calls["n"] = -100
    rc, resumed, err = run_cli([*args, "--out", str(out), "--resume"])
    assert rc == 0, err
    assert calls["n"] == -100 + 1  # only the compared recipe's second batch was evolved again
    a, b = load_file(str(out / "prototypes.safetensors")), load_file(str(tmp_path / "fresh" / "prototypes.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ja, jb = json.loads(resumed), json.loads(fresh)
    assert ja["compare"] == jb["compare"] and ja["compare"]["recipe"] == "natural"
    assert ja["summary"] == jb["summary"] and ja["self"] == jb["self"]
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_judge_trained_with_another_seed_scores_the_prototypes(tmp_path: Path) -> None:
    x, y = load("digits:train")
    other = DigitsCNN()
    train.fit(other, x, y, train.TrainConfig(epochs=3, seed=1))
    ckpt = tmp_path / "seed1.safetensors"
    save_file(other.state_dict(), str(ckpt))
    out = tmp_path / "judged"
    rc, stdout, err = run_cli(
        [
            "prototypes",
            "--model",
            "digits-cnn",
            "--start",
            "noise:gaussian",
            "--steps",
            "80",
            "--judge",
            f"digits-cnn={ckpt}",
            "--out",
            str(out),
            "--json",
        ]
    )
    assert rc == 0, err
    m = json.loads(stdout)
    verdict = m["judges"][f"digits-cnn={ckpt}"]
    judge = zoo.load("digits-cnn", weights=ckpt)
    t = load_file(str(out / "prototypes.safetensors"))
    with torch.no_grad():
        p = judge(t["x"]).softmax(1)
    assert verdict["top1_agreement"] == pytest.approx(float((p.argmax(1) == t["target"]).float().mean()))
    assert verdict["target_probability_mean"] == pytest.approx(
        float(p.gather(1, t["target"][:, None]).mean()), rel=1e-5
    )
    assert 1.0 <= verdict["inception_score"] <= 10.0


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--start", "blank:purple"], "colour name"),
        (["--start", "noise:pink"], "gaussian"),
        (["--targets", "12"], "out of range"),
        (["--targets", "3", "--strip-classes", "4"], "not among the targets"),
        (["--mode", "mid"], "invalid choice"),
        (["--eps", "-1"], "eps must be positive"),
        (["--judge", "efficientnet-lite0"], "channel"),
        (["--snapshots", "a,b"], "step numbers"),
        (["--bn", "0.1"], "BatchNorm"),
        (["--param", "fourier", "--eps", "0.1"], "eps and blur act on pixels"),
        (["--recipe", "natural", "--scale", "1.5"], "scale < 1"),
        (["--preset", "natural"], "--preset is now --recipe (a prototypes recipe): --recipe natural"),
    ],
)
def test_bad_input_is_one_line_and_leaves_nothing(tmp_path: Path, extra: list[str], message: str) -> None:
    out = tmp_path / "bad"
    rc, _, err = run_cli(["prototypes", "--model", "digits-cnn", *extra, "--out", str(out)])
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and not (tmp_path / "bad.partial").exists()


def test_natural_recipe_with_a_judge_and_the_adversarial_recipe_side_by_side(tmp_path: Path) -> None:
    out = tmp_path / "natural"
    rc, stdout, err = run_cli(
        [
            "prototypes",
            "--model",
            "digits-cnn",
            "--recipe",
            "natural",
            "--start",
            "digits:test",
            "--limit",
            "1",
            "--steps",
            "80",
            "--judge",
            "digits-cnn",
            "--judge",
            "digits-cnn",
            "--compare",
            "adversarial",
            "--out",
            str(out),
            "--json",
        ]
    )
    assert rc == 0, err
    m = json.loads(stdout)
    assert (m["recipe"], m["param"], m["method"], m["rotate"], m["steps"]) == ("natural", "fourier", "mifgsm", 20.0, 80)
    assert m["self"]["top1_agreement"] == 1.0 and m["judge_ensemble"] == m["judges"]["digits-cnn"]  # two equal judges
    cmp = m["compare"]
    assert (
        cmp["recipe"] == "adversarial"
        and cmp["objective"] == "cross_entropy()"
        and set(cmp["judges"]) == {"digits-cnn"}
    )
    t = load_file(str(out / "prototypes.safetensors"))
    assert float(t["x"].min()) >= 0 and float(t["x"].max()) <= 1 and t["x"].shape == (10, 1, 8, 8)
    page = (out / "report.html").read_text()
    assert "Recognizability" in page and "judge ensemble" in page and page.count("<td>adversarial</td>") >= 2
    for png in (
        "grid.png",
        "difference.png",
        "compare.png",
        "strips.png",
    ):  # a photo start also shows the amplified change
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png in page


def test_each_recipe_runs_its_own_step_count_unless_steps_is_given(tmp_path: Path) -> None:
    rc, stdout, err = run_cli(
        [
            "prototypes",
            "--model",
            "digits-cnn",
            "--recipe",
            "natural",
            "--targets",
            "0-1",
            "--out",
            str(tmp_path / "n"),
            "--json",
            "--compare",
            "adversarial",
        ]
    )
    assert rc == 0, err
    m = json.loads(stdout)
    assert m["steps"] == 256 and m["compare"]["summary_reached_top1"] == 2


def _chromium_dom(page: Path, fragment: str, tmp: Path) -> str | None:
    """The DOM of ``page#fragment`` after its scripts ran, from headless Chromium (None when it is not installed)."""
    import shutil
    import subprocess

    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        return None
    cmd = [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--no-first-run",
        f"--user-data-dir={tmp / 'profile'}",
        "--dump-dom",
        f"{page.resolve().as_uri()}#{fragment}",
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout


def test_quiz_page_in_a_browser_and_the_human_score(tmp_path: Path) -> None:
    out = tmp_path / "run"
    rc, _, err = run_cli(
        ["prototypes", "--model", "digits-cnn", "--targets", "0-4", "--steps", "20", "--out", str(out), "-q"]
    )
    assert rc == 0, err
    rc, _, err = run_cli(["prototypes", "quiz", str(out)])
    assert rc == 0, err
    key = json.loads((out / "quiz.json").read_text())
    items = key["items"]
    assert [i["target"] for i in items] == [0, 1, 2, 3, 4]
    for i in items:  # four distinct choices, the target among them, not always in the same place
        assert len(set(i["choices"])) == 4 and i["target"] in i["choices"]
    assert len({i["choices"].index(i["target"]) for i in items}) > 1
    page = (out / "quiz.html").read_text()
    assert "://" not in page.replace("data:image/png;base64,", "") and page.count("<img") == 5  # self-contained
    # a person answers items 0-2 right, item 3 wrong and skips item 4
    wrong = next(c for c in items[3]["choices"] if c != items[3]["target"])
    picks = [str(i["target"]) for i in items[:3]] + [str(wrong), "-"]
    dom = _chromium_dom(out / "quiz.html", "answers=" + ",".join(picks), tmp_path)
    if dom is None:
        answers = {"quiz": key["quiz"], "answers": {str(k): int(v) for k, v in enumerate(picks) if v != "-"}}
    else:  # the answers JSON as the page itself keeps it
        pre = dom.split('<pre id="answers">')[1].split("</pre>")[0]
        answers = json.loads(pre.replace("&quot;", '"'))
        assert answers["answers"] == {
            "0": items[0]["target"],
            "1": items[1]["target"],
            "2": items[2]["target"],
            "3": wrong,
        }
    (tmp_path / "answers.json").write_text(json.dumps(answers))
    rc, stdout, err = run_cli(["prototypes", "score", str(out), str(tmp_path / "answers.json")])
    assert rc == 0, err
    self_top1 = json.loads((out / "metrics.json").read_text())["self"]["top1_agreement"]
    assert (
        "human: 3 of 4 answered right (75%; 5 questions)" in stdout and f"the model itself: {self_top1:.0%}" in stdout
    )
    (tmp_path / "other.json").write_text(json.dumps({"quiz": "another", "answers": {}}))
    rc, _, err = run_cli(["prototypes", "score", str(out), str(tmp_path / "other.json")])
    assert rc == 2 and "belong to quiz" in err
    rc, _, err = run_cli(["prototypes", "--targets", "0-1"])
    assert rc == 2 and "needs --model" in err


DEAD_MODEL = """
import torch
from torch import nn


class DeadBelow(nn.Module):
    input_size = 4
    in_channels = 1

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(16, 3, bias=False)
        with torch.no_grad():
            self.head.weight.copy_(torch.linspace(-1, 1, 48).view(3, 16))

    def forward(self, x):
        return self.head(torch.relu(x - 0.6).flatten(1))  # every unit off, gradient exactly 0, on gray


def make():
    return DeadBelow()
"""


def test_a_start_with_zero_gradient_says_so_instead_of_converged(tmp_path: Path) -> None:
    (tmp_path / "dead.py").write_text(DEAD_MODEL)
    model = f"{tmp_path / 'dead.py'}:make"
    base = ["prototypes", "--model", model, "--targets", "1,2", "--steps", "5", "--out"]
    rc, stdout, err = run_cli([*base, str(tmp_path / "gray"), "--start", "blank:gray"])
    assert rc == 0, err
    assert "0 converged, 2 did not move: zero gradient at the start: try noise:gaussian" in stdout
    s = json.loads((tmp_path / "gray" / "metrics.json").read_text())["summary"]
    assert (s["converged"], s["zero_gradient_at_start"]) == (0, 2)
    assert s["advice"] == "zero gradient at the start: try noise:gaussian"
    rc, stdout, err = run_cli([*base, str(tmp_path / "noise"), "--start", "noise:gaussian"])
    assert rc == 0, err
    assert "did not move" not in stdout and "zero gradient" not in stdout
