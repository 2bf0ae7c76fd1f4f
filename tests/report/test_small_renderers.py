"""The small renderers the commands call instead of writing HTML or titles themselves."""

from __future__ import annotations

import pytest

from advlab.report.figures import prediction_titles, short
from advlab.report.html import html_list


def test_html_list_escapes_every_item() -> None:
    assert html_list(["eps <= 0.1", 'a "quoted" & odd']) == (
        "<ul><li>eps &lt;= 0.1</li><li>a &quot;quoted&quot; &amp; odd</li></ul>"
    )
    assert html_list([]) == "<ul></ul>"


def test_prediction_titles_cut_long_class_names_and_show_percent() -> None:
    titles = prediction_titles("clean", ["cat", "a very long class name indeed"], [0.5, 0.987])
    assert titles == ["clean: cat 50%", f"clean: {short('a very long class name indeed')} 99%"]
    assert short("a very long class name indeed") == "a very long class…" and len(short("x" * 40)) == 18
    with pytest.raises(ValueError):
        prediction_titles("adversarial", ["cat"], [0.1, 0.2])  # one confidence per name
