"""The argparse pieces of the ``advlab`` command that load nothing heavy (no torch): one-line errors with the
nearest name on a typo, the help formatter, integer range types. ``advlab --help`` and a mistyped command are
answered with these alone (see :mod:`advlab.cli`)."""

from __future__ import annotations

import argparse
import difflib
import re
from collections.abc import Callable
from typing import Any


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad argument as one line on stderr and exit code 2 (no usage dump), with the
    nearest name on a typo of a command, a choice or an option ("did you mean 'attack'?")."""

    def error(self, message: str) -> Any:
        self.exit(2, one_line(f"{self.prog}: error: {did_you_mean(message)} (see --help)") + "\n")

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        ns, extras = super().parse_known_args(args, namespace)
        if extras and not hasattr(ns, "_unknown_in"):
            ns._unknown_in = self  # the innermost (sub)command that left them: its options are the ones to suggest
        return ns, extras

    def parse_args(self, args: Any = None, namespace: Any = None) -> Any:
        ns, extras = self.parse_known_args(args, namespace)
        owner = vars(ns).pop("_unknown_in", self)
        if extras:
            options = [o for a in owner._actions for o in a.option_strings if o.startswith("--")]
            near = [
                m
                for t in extras
                if t.startswith("--")
                for m in difflib.get_close_matches(t.split("=")[0], options, n=1)
            ]
            hint = f"; did you mean {', '.join(near)}?" if near else ""
            owner.error(f"unrecognized arguments: {' '.join(extras)}{hint}")
        return ns


#: characters that break a line or steer a terminal: C0 / C1 controls, line and paragraph separators, bidi overrides
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")
#: the longest error message printed whole; a longer one keeps its start and end
MAX_MESSAGE = 2000


def one_line(text: str) -> str:
    """``text`` as one printable line: every control character escaped ("\\n", "\\x1b"), so a file or class name
    with a newline cannot split an error message nor move the cursor; an over-long text is cut in its middle."""
    text = _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)
    if len(text) > MAX_MESSAGE:
        half = MAX_MESSAGE // 2
        text = f"{text[:half]} ... ({len(text) - MAX_MESSAGE} characters left out) ... {text[-half:]}"
    return text


def did_you_mean(message: str) -> str:
    """argparse's "invalid choice: 'atack' (choose from 'demo', ...)" as "invalid choice: 'atack'; did you mean
    'attack'?" when one choice is near; other messages unchanged."""
    m = re.search(r"invalid choice: (.+?) \(choose from (.+)\)$", message)
    if not m:
        return message
    choices = [c.strip().strip("'") for c in m.group(2).split(",")]
    near = difflib.get_close_matches(m.group(1).strip("'"), choices, n=1)
    return f"{message[: m.start(2) - len(' (choose from ')]}; did you mean {near[0]!r}?" if near else message


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Keep the examples' line breaks; append "(default: X)" to an option's help only when X tells something:
    never for None, a flag's False or an empty list, nor when the help already names its default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        d = action.default
        if (
            not action.option_strings
            or d is None
            or d is False
            or d == []
            or d is argparse.SUPPRESS
            or "default" in text
        ):
            return text
        return f"{text} (default: %(default)s)"


def _shown(text: str, n: int = 24) -> str:
    """``text`` quoted for a message, cut to ``n`` characters (a hostile value may be megabytes long)."""
    return repr(text) if len(text) <= n else repr(text[:n]) + f"... ({len(text)} characters)"


def bounded_int(lo: int, hi: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer in ``lo..hi``; a value outside is refused with a message naming the bound."""

    def parse(text: str) -> int:
        huge = re.fullmatch(r"\s*([+-]?)\d{40,}\s*", text)  # beyond any bound (and Python's int() of over 4300 digits)
        try:
            v = (lo - 1 if huge.group(1) == "-" else hi + 1) if huge else int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {_shown(text)}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"must be >= {lo}, got {_shown(text)}")
        if v > hi:
            raise argparse.ArgumentTypeError(f"must be at most {hi}, got {_shown(text)}")
        return v

    parse.__name__ = f"integer in {lo}..{hi}"
    return parse
