"""The command line's flags as the Python API's keywords, in the messages of its refusals.

The pipeline is shared, and its messages name the command line's flags (`rerun with --overwrite`, `-j/--workers
must be ...`); a caller of `coffea_dispatch.run()` or `coffea_dispatch.executor()` has keywords instead
(`overwrite=True`, `workers=`). Rather than every message knowing who asked, the API translates each refusal
once, where it leaves: the option spec maps every flag to its field, and `run()` renames one (`--chunk` is
coffea's `chunksize=`). Command lines shown for copying (`coffea-dispatch status ...`, text in backquotes) are
left as they are. A leaf: it knows the spec, not who uses it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from coffea_dispatch.errors import DispatchError
from coffea_dispatch.options import Option, RunOptions, SubmitOptions, options_of
from coffea_dispatch.options.values import closest, value_type

RENAMED = {"chunk": "chunksize"}  # run()'s and coffea's Runner's name for --chunk
PROTECTED = re.compile(r"`[^`]*`|coffea-dispatch [^;`]*")  # command lines to copy: flags stay flags
# a value after its flag: quoted, or a bare token without the ':' or '.' that ends the clause after it
VALUE = re.compile(r" ('[^']*'|\"[^\"]*\"|[^\s,;()]+?)(?=[:.]?(?:[\s,;()]|$))")
NUMERIC = re.compile(r"-?\d[\w.+-]*")
METAVAR = re.compile(r"[A-Z][A-Z_]*")


def python_options(*more: Iterable[Option]) -> Iterator[Option]:
    """The options the Python API takes as keywords: the run's (not the analysis JSON: run()'s first argument),
    job arrays', and `more` (an executor's own settings, a batch backend's options)."""
    yield from (o for o in options_of(RunOptions) if o.dest != "json_analysis")
    yield from options_of(SubmitOptions)
    for options in more:
        yield from options


def keyword_of(spec: Option, renamed: Mapping[str, str] = RENAMED) -> str:
    return renamed.get(spec.dest, spec.dest)


def in_keywords(message: str, specs: Iterable[Option], values: Mapping[str, Any] | None = None) -> str:
    """`message` with each flag of `specs` as its keyword: a switch as `overwrite=True` (`progress=False` for
    `--no-progress`), an option with the value that follows it as `chunksize=1000`, else as `dump=`.
    `values` (the keywords given) tell a value that is a word (`--dump out`) from the words of the message."""
    by_flag = {}
    for spec in specs:
        for flag in (spec.label, *(f for f in spec.flags if f.startswith("--"))):
            by_flag.setdefault(flag, spec)
    if not by_flag:
        return message
    flags = "|".join(re.escape(flag) for flag in sorted(by_flag, key=len, reverse=True))
    pattern = re.compile(rf"(?<![^\s(\[])({flags})(?![\w-]|\.\w)")  # a word of its own, not in a file name
    parts, last = [], 0
    for protected in PROTECTED.finditer(message):
        parts.append(_translated(message[last : protected.start()], pattern, by_flag, values or {}))
        parts.append(protected.group())
        last = protected.end()
    parts.append(_translated(message[last:], pattern, by_flag, values or {}))
    return "".join(parts)


def _translated(text: str, pattern: re.Pattern, by_flag: dict[str, Option], values: Mapping[str, Any]) -> str:
    out, last = [], 0
    for found in pattern.finditer(text):
        spec = by_flag[found.group(1)]
        keyword = keyword_of(spec)
        out.append(text[last : found.start()])
        last = found.end()
        if spec.action:
            out.append(f"{keyword}={spec.action == 'store_true'}")
            continue
        value = VALUE.match(text, last)
        if value and _is_value(value.group(1), spec, values):
            out.append(f"{keyword}={_as_python(value.group(1), spec)}")
            last = value.end()
        else:
            out.append(f"{keyword}=")
    return "".join(out) + text[last:]


def _is_value(token: str, spec: Option, values: Mapping[str, Any]) -> bool:
    """A value, not the message's next word: quoted, a number, a path, a metavar (PATH), or the one given."""
    given = values.get(keyword_of(spec), values.get(spec.dest))
    if given is not None and token == (os.fspath(given) if isinstance(given, os.PathLike) else str(given)):
        return True
    return token[0] in "'\"" or bool(NUMERIC.fullmatch(token) or METAVAR.fullmatch(token)) or "/" in token


def _as_python(token: str, spec: Option) -> str:
    """As the keyword would be written: numbers and metavars bare, text quoted."""
    if token[0] in "'\"" or value_type(spec) in ("integer", "number") or METAVAR.fullmatch(token):
        return token
    return repr(token)


@contextmanager
def keywords_named(specs: Callable[[], Iterable[Option]], values: Mapping[str, Any] | None = None) -> Iterator[None]:
    """Refusals raised in the block name keywords instead of flags (`specs` is asked only when one is raised:
    knowing every option may mean reading the executor plugins)."""
    try:
        yield
    except DispatchError as error:
        known = list(specs())
        translated = with_keywords_meant(in_keywords(error.message, known, values), known)
        error.message = translated
        error.args = (translated, *error.args[1:])
        raise


# run()'s and executor()'s refusal of keywords they do not take; run() points to its help, executor() lists them
UNKNOWN = re.compile(r"unknown option\(s\) ([\w, ]+?) \((?:see help\(coffea_dispatch\.run\)|it takes: ([^)]*))\)")
RUN_SIGNATURE = ("executor", "dump", "chunksize", "announce")  # run()'s own keywords beside the spec's
NOT_RUN_KEYWORDS = {"job_record"}  # a job array's job writes it, as its submitter tells it: never a caller


def keyword_aliases(specs: Iterable[Option]) -> dict[str, str]:
    """What a caller may write for each keyword, as the flag reads (`no_plot` for `--no-plot`, `chunk` for
    `--chunk`), to the keyword meant (`plot=False`, `chunksize=`); every keyword is its own alias."""
    aliases = {}
    for spec in specs:
        keyword = keyword_of(spec)
        aliases[keyword] = f"{keyword}="
        for flag in (f for f in spec.flags if f.startswith("--")):
            written = flag[2:].replace("-", "_")
            negated = spec.action == "store_false" and written.startswith("no_")
            aliases.setdefault(written, f"{keyword}=False" if negated else f"{keyword}=")
    return aliases


def with_keywords_meant(message: str, specs: list[Option]) -> str:
    """An unknown-keyword refusal with the keyword meant for each (`no_plot` -> `plot=False`) and, for run(),
    the keywords it takes; any other message as it is."""
    found = UNKNOWN.search(message)
    if not found:
        return message
    unknown = found.group(1).split(", ")
    if found.group(2):  # executor(): the keywords it takes, listed
        taken = found.group(2).split(", ")
        aliases = {k: v for k, v in keyword_aliases(specs).items() if _keyword(v) in taken}
        aliases.update({name: f"{name}=" for name in taken})
    else:
        taken_by_run = {o.dest for o in python_options()} - NOT_RUN_KEYWORDS
        aliases = keyword_aliases(s for s in specs if s.dest in taken_by_run)
        aliases.update({name: f"{name}=" for name in RUN_SIGNATURE})
        taken = sorted({_keyword(alias) for alias in aliases.values()})
    meant = {name: _meant(name, aliases) for name in unknown}
    hints = [f"{m}" if len(unknown) == 1 else f"{m} for {name}" for name, m in meant.items() if m]
    hint = f": did you mean {', '.join(hints)}?" if hints else ""
    listed = f" (it takes: {', '.join(taken)})"
    return f"{message[: found.start()]}unknown option(s) {', '.join(unknown)}{hint}{listed}{message[found.end() :]}"


def _meant(name: str, aliases: Mapping[str, str]) -> str | None:
    """The keyword `name` stands for: a flag's spelling of one, or a close misspelling."""
    if name in aliases:
        return aliases[name]
    found = closest(name, aliases)
    return aliases[found] if found else None


def _keyword(alias: str) -> str:
    """`plot=False` -> `plot`; `workers=` -> `workers`."""
    return alias.removesuffix("=False").removesuffix("=")
