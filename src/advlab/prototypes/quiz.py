"""A human check of prototypes: each prototype with four class names to choose from, and the person's score.

:func:`make` draws, per prototype, its target and three other classes (from the run's targets when it has at
least four, else from all classes) in a seeded random order; :func:`page` renders a self-contained HTML page
(the images embedded as PNG data URIs, no network) with one radio group per prototype, the answers kept live
as JSON in ``<pre id="answers">`` and a button that downloads them as ``answers.json``:

    {"quiz": ID, "answers": {"0": CLASS, "3": CLASS, ...}}        (item -> chosen class index)

:func:`score` compares such answers with the key: human accuracy = correct / answered (and / items).
For tests and demos, ``page.html#answers=C0,C1,...`` preselects the given classes (``-`` skips an item).
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import asdict, dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Item:
    """One question: the prototype's ``pair`` index in the run, its ``target`` and the ``choices`` shown."""

    pair: int
    target: int
    choices: tuple[int, ...]


def make(targets: list[int], num_classes: int, seed: int = 0, choices: int = 4, limit: int = 100) -> list[Item]:
    """Questions for the first ``limit`` prototypes with targets ``targets`` (pair order): each target with
    ``choices - 1`` distinct other classes, shuffled by a generator seeded with ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    pool = sorted(set(targets)) if len(set(targets)) >= choices else list(range(num_classes))
    if len(pool) < choices:
        raise ValueError(f"a quiz needs at least {choices} classes, the model has {len(pool)}")
    items = []
    for pair, t in enumerate(targets[:limit]):
        others = [c for c in pool if c != t]
        picked = [others[int(i)] for i in torch.randperm(len(others), generator=gen)[: choices - 1]]
        order = torch.randperm(choices, generator=gen).tolist()
        opts = [t, *picked]
        items.append(Item(pair, int(t), tuple(int(opts[i]) for i in order)))
    return items


def key(items: list[Item], quiz_id: str) -> dict[str, Any]:
    """The answer key as JSON-ready data (saved next to the page)."""
    return {"quiz": quiz_id, "items": [asdict(i) for i in items]}


def score(key_data: dict[str, Any], answers: dict[str, Any]) -> dict[str, Any]:
    """Human accuracy of ``answers`` ({"quiz": ID, "answers": {item: class}}) against ``key_data`` (see :func:`key`)."""
    if answers.get("quiz") != key_data["quiz"]:
        raise ValueError(f"these answers belong to quiz {answers.get('quiz')!r}, not {key_data['quiz']!r}")
    items = key_data["items"]
    given = {int(k): int(v) for k, v in (answers.get("answers") or {}).items()}
    bad = [k for k in given if not 0 <= k < len(items)]
    if bad:
        raise ValueError(f"answer for item {bad[0]}, but the quiz has items 0..{len(items) - 1}")
    correct = sum(given[k] == items[k]["target"] for k in given)
    return {
        "items": len(items),
        "answered": len(given),
        "correct": correct,
        "accuracy_answered": correct / len(given) if given else None,
        "accuracy_all": correct / len(items),
    }


def _png(x: torch.Tensor) -> str:
    """A (C, H, W) image in [0, 1] as a PNG data URI (nearest-neighbour enlarged to at least 160 pixels)."""
    from PIL import Image

    img = (x.clamp(0, 1) * 255).round().byte()
    arr = img[0].numpy() if img.shape[0] == 1 else img.permute(1, 2, 0).numpy()
    pil = Image.fromarray(arr)
    k = max(1, 160 // max(pil.size))
    pil = pil.resize((pil.size[0] * k, pil.size[1] * k), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


_SCRIPT = """
const QUIZ = document.body.dataset.quiz, answers = {};
function update() { document.getElementById('answers').textContent = JSON.stringify({quiz: QUIZ, answers: answers}); }
document.querySelectorAll('input[type=radio]').forEach(r => r.addEventListener('change', () => {
  answers[r.name.slice(1)] = Number(r.value); update();
}));
const m = location.hash.match(/answers=([^&]*)/);
if (m) m[1].split(',').forEach((c, i) => {
  const r = document.querySelector(`input[name=q${i}][value="${c}"]`);
  if (r) { r.checked = true; answers[String(i)] = Number(c); }
});
document.getElementById('download').addEventListener('click', () => {
  const a = document.createElement('a');
  a.href = URL.createObjectURL(new Blob([document.getElementById('answers').textContent], {type: 'application/json'}));
  a.download = 'answers.json'; a.click();
});
update();
"""


def page(items: list[Item], x: torch.Tensor, names: list[str], quiz_id: str, title: str) -> str:
    """The quiz as one self-contained HTML page; ``x`` holds the run's prototypes (pairs, C, H, W)."""
    cards = []
    for i, it in enumerate(items):
        opts = "".join(
            f"<label><input type='radio' name='q{i}' value='{c}'> {html.escape(names[c])}</label><br>"
            for c in it.choices
        )
        cards.append(
            f"<div class='q' id='item{i}'><img src='{_png(x[it.pair])}' alt='prototype {i}'>"
            f"<p>{i + 1}. Which class is this?</p>{opts}</div>"
        )
    style = (
        "body{font-family:sans-serif;margin:1em} "
        ".q{display:inline-block;vertical-align:top;width:200px;margin:8px;padding:8px;"
        "border:1px solid #ccc} img{width:160px;image-rendering:pixelated}"
    )
    answers = html.escape(json.dumps({"quiz": quiz_id, "answers": {}}))
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head>"
        f"<body data-quiz='{html.escape(quiz_id)}'><h1>{html.escape(title)}</h1><p>Pick the class each picture shows, "
        f"then download your answers.</p>{''.join(cards)}<p><button id='download'>Download answers (JSON)</button></p>"
        f"<pre id='answers'>{answers}</pre><script>{_SCRIPT}</script></body></html>"
    )
