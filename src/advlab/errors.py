"""The one exception type that means "the user gave us something we cannot use".

Library code raises :class:`AdvlabError` (or a subclass) with a message that fits on one line and
says what was wrong and, where it helps, what to do instead. The CLI turns it into that one line on
stderr and exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class AdvlabError(ValueError):
    """Bad input from the user: a missing file, an unknown spec, a malformed tensor, ..."""


class NotAvailableError(AdvlabError):
    """An optional dependency (torchvision, timm, a weight package, a dataset file) is not available."""
