"""The one exception type the binaries turn into a one-sentence message instead of a traceback."""

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """Something the user can fix: a bad name, flag, config value or work directory."""


def unknown_name_message(kind: str, name: str, known: Iterable[str]) -> str:
    """`unknown model 'resnt50'; did you mean 'resnet50'? Known models: a, b, c.`"""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else "."
    listing = ", ".join(known) if known else "(none registered)"
    return f"unknown {kind} {name!r}{hint} Known {kind}s: {listing}."


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the last good checkpoint was kept."""
