"""Shared by the hostile-input tests: a refusal must be one line, name what is wrong, and never hang."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable

from advlab.errors import AdvlabError


def refuses(fn: Callable[[], object], match: str, within_s: float = 30.0) -> AdvlabError:
    """``fn()`` raises an AdvlabError matching ``match``, on one line, within ``within_s`` seconds (run in a
    daemon thread, so that a call that blocks fails the test instead of hanging it). Returns the error."""
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["result"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            box["error"] = e

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(within_s)
    assert not worker.is_alive(), f"still running after {within_s} s (blocked?)"
    err = box.get("error")
    assert isinstance(err, AdvlabError), f"expected an AdvlabError, got {err!r} / {box.get('result')!r}"
    message = str(err)
    assert "\n" not in message and message.strip(), message
    assert re.search(match, message), f"{match!r} not in {message!r}"
    return err
