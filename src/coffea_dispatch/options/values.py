"""What values an option takes, read from its spec (`options.Option`): its type, its range, whether None is one.

Every caller checks with `refusal` (through `options.check_values`): the command line after parsing, `run()` and
`executor()` before anything starts, so a wrong value is one line naming the option and what it takes, never a
TypeError from deep inside, or a sleep that fails after the jobs were submitted. A leaf: it knows no option by name.
"""

from __future__ import annotations

import difflib
import math
import numbers
import os
import reprlib
from collections.abc import Callable, Iterable
from typing import Any, Protocol

INT_LIMIT = 2**63 - 1  # the largest integer numpy, the batch systems and the clocks take: larger is refused


class Spec(Protocol):
    """What of an option its values depend on (`options.Option` has it)."""

    default: Any
    type: Callable[[str], Any] | None
    action: str | None
    path: bool
    minimum: float | None
    maximum: float | None
    nullable: bool | None

    @property
    def label(self) -> str: ...


def value_type(spec: Spec) -> str:
    """What its values are: a switch, an integer, a number, a path, a string, or "other" (a type of its own,
    which only it knows)."""
    if spec.action:
        return "switch"
    if spec.type in (int, float):
        return "integer" if spec.type is int else "number"
    if spec.type in (None, str):
        return "path" if spec.path else "string"
    return "other"


def range_words(low: float | None, high: float | None) -> str:
    """A range in words ("at least 1", "0 or more", "from 0 to 65535"; "" without one)."""
    if low is not None and high is not None:
        return f"from {_number(low)} to {_number(high)}"
    if high is not None:
        return f"at most {_number(high)}"
    if low is not None:
        return "0 or more" if low == 0 else f"at least {_number(low)}"
    return ""


def takes(spec: Spec) -> str:
    """What it takes, in words: "an integer of at least 1", "True or False", "a path"."""
    kind = value_type(spec)
    if kind == "switch":
        return "True or False"
    if kind in ("integer", "number"):
        noun = "an integer" if kind == "integer" else "a number"
        words = range_words(spec.minimum, spec.maximum)
        return f"{noun} {'of ' if words and not words.startswith('from') else ''}{words}".strip()
    return {"path": "a path", "string": "a string"}.get(kind, "a value")


def refusal(spec: Spec, value: Any) -> str | None:
    """Why `value` is not one of the option's values, as one line naming it (`-j/--workers must be an integer
    of at least 1, got '2'`); None when it is one."""
    kind = value_type(spec)
    if value is None:
        nullable = spec.default is None if spec.nullable is None else spec.nullable
        return None if nullable or kind == "other" else _wrong(spec, value)
    if kind == "switch":
        return None if isinstance(value, bool) else _wrong(spec, value)
    if kind in ("integer", "number"):
        return _numeric_refusal(spec, value)
    if kind == "other":
        return None
    if not isinstance(value, str) and not (kind == "path" and isinstance(value, os.PathLike)):
        return _wrong(spec, value)
    text = os.fspath(value)
    if not isinstance(text, str) or not encodable(text) or "".join(text.splitlines()) != text:
        # a line break too: the value goes into job scripts and one-line messages
        return f"{spec.label} must be {takes(spec)} of one line without NUL, got {reprlib.repr(text)}"
    return None


def _wrong(spec: Spec, value: Any) -> str:
    return f"{spec.label} must be {takes(spec)}, got {reprlib.repr(value)}"


def _numeric_refusal(spec: Spec, value: Any) -> str | None:
    """An integer (never a bool) up to INT_LIMIT, or a finite number, within its range."""
    integer = value_type(spec) == "integer"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral if integer else numbers.Real):
        return _wrong(spec, value)
    if not integer and not _finite(value):
        return _wrong(spec, value)
    high = spec.maximum
    if integer:
        high = INT_LIMIT if high is None else min(high, INT_LIMIT)
    if (spec.minimum is None or value >= spec.minimum) and (high is None or value <= high):
        return None
    shown = high if high is not None and value > high else spec.maximum
    return f"{spec.label} must be {range_words(spec.minimum, shown)}, got {value}"


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large to be a float
        return False


def encodable(text: str) -> bool:
    """A text that can become a file name or an argument: no NUL, and bytes for every character (a lone
    surrogate other than those of undecodable file name bytes has none)."""
    try:
        text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


def closest(word: str, choices: Iterable[str], cutoff: float = 0.75) -> str | None:
    """The choice `word` is most likely a misspelling of (`exectuor` -> `executor`), or None when none is close
    (difflib's similarity under `cutoff`): a refusal that names it saves the user reading the whole list."""
    found = difflib.get_close_matches(word, list(choices), n=1, cutoff=cutoff)
    return found[0] if found else None


def did_you_mean(word: str, choices: Iterable[str], shown: Callable[[str], str] = repr, cutoff: float = 0.75) -> str:
    """`did you mean 'executor'? ` when a choice is close to `word` ("" when none is), to open a refusal's hint."""
    found = closest(word, choices, cutoff)
    return "" if found is None else f"did you mean {shown(found)}? "
