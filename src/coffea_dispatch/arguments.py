"""The `run` command's parser, assembled from the option spec (`options.py`), the batch backends' own options
and those of executor plugins (ours are all in the spec: each kind's settings are made of its option groups).

It sits above them: the spec is a leaf every layer reads, and only the command line needs to know which
backends and executors exist to draw its --help. Every value parsed is checked here (types by argparse, ranges
and the rest by the spec: `options.check_values`), before the run starts.
"""

from __future__ import annotations

import argparse
import copy
import re
from typing import Any, NoReturn

from coffea_dispatch.batch.registry import backends
from coffea_dispatch.errors import EXIT_BAD_INPUT
from coffea_dispatch.executors.registry import executor_names, plugin_kinds
from coffea_dispatch.options import (
    ARRAYS,
    DASK,
    EXECUTION,
    MAIN,
    PHYSICS,
    Option,
    PhysicsSwitches,
    RunOptions,
    SubmitOptions,
    check_options,
    check_values,
    options_of,
)
from coffea_dispatch.options.values import did_you_mean

GROUP_ORDER = (MAIN, EXECUTION, DASK, ARRAYS, PHYSICS)


class HelpFormatter(argparse.HelpFormatter):
    """Expands %(executors)s only when help is shown: listing every executor reads the installed backend
    plugins, which a run on a built-in executor never needs."""

    def _expand_help(self, action: argparse.Action) -> str:
        if "%(executors)" not in (action.help or ""):
            return super()._expand_help(action)
        action = copy.copy(action)
        action.help = action.help.replace("%(executors)s", ", ".join(executor_names()))
        return super()._expand_help(action)


def backend_options() -> list[Option]:
    return [o for backend in backends() for o in backend.options]


def plugin_executor_options() -> list[Option]:
    """The options executor plugins declare beyond the spec's, each once."""
    known = {o.dest for o in options_of(RunOptions)}
    found = {o.dest: o for kind in plugin_kinds() for o in options_of(kind.settings) if o.dest not in known}
    return list(found.values())


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Every option of `run`, grouped as in --help."""
    parser.formatter_class = HelpFormatter
    one_line_errors(parser)
    groups: dict[str | None, Any] = {MAIN: parser}
    for spec in _every_option():
        if spec.group not in groups:
            groups[spec.group] = parser.add_argument_group(spec.group)
        spec.add_to(groups[spec.group])


def one_line_errors(parser: argparse.ArgumentParser) -> None:
    """A value argparse cannot take (`-j abc`) is its one line, as every other refusal is: argparse printed
    the whole usage, 30 lines, before it. A choice misspelt (`rnu`, `--format coffee`) names the one meant."""
    prog = parser.prog

    def error(message: str) -> NoReturn:
        parser.exit(EXIT_BAD_INPUT, f"error: {_with_suggestion(message)} (`{prog} --help` lists the options)\n")

    parser.error = error  # type: ignore[method-assign]


def _with_suggestion(message: str) -> str:
    """argparse's `invalid choice: 'rnu' (choose from 'run', ...)` with the choice meant (Python 3.11's argparse
    has no suggest_on_error)."""
    found = INVALID_CHOICE.search(message)
    if not found:
        return message
    hint = did_you_mean(found.group(1), CHOICE.findall(found.group(2)), cutoff=0.6)  # few choices, short words
    return f"{message[: found.end(1) + 1]}: {hint.strip()}{message[found.end(1) + 1 :]}" if hint else message


INVALID_CHOICE = re.compile(r"invalid choice: '([^']*)' \(choose from (.*)\)")
CHOICE = re.compile(r"'([^']*)'")


def refuse_unrecognized(parser: argparse.ArgumentParser, extras: list[str]) -> NoReturn:
    """What argparse could not place (`--exectuor futures`), in one line naming the first unknown option and
    the option meant, exit 2."""
    options = [a for a in extras if a.startswith("-")]
    if not options:
        parser.error(f"unrecognized argument(s): {' '.join(extras)}")
    word = options[0].partition("=")[0]
    known = [flag for action in parser._actions for flag in action.option_strings]
    hint = did_you_mean(word, known, shown=str)
    parser.error(f"unknown option {word}" + (f": {hint.strip()}" if hint else ""))


def _every_option() -> list[Option]:
    """In --help's order: the run's own options, then each group (a backend's own groups last)."""
    every = [*options_of(RunOptions), *options_of(SubmitOptions), *backend_options(), *options_of(PhysicsSwitches)]
    every += plugin_executor_options()
    rank = {group: position for position, group in enumerate(GROUP_ORDER)}
    return sorted(every, key=lambda o: rank.get(o.group, len(GROUP_ORDER)))


def run_options_from(args: argparse.Namespace) -> RunOptions:
    """The run's options, each value checked (ranges, NUL in a text) with its flag named."""
    values = {o.dest: getattr(args, o.dest) for o in options_of(RunOptions)}
    physics = {o.dest: getattr(args, o.dest) for o in options_of(PhysicsSwitches)}
    plugins = {o.dest: getattr(args, o.dest) for o in plugin_executor_options()}
    check_values(RunOptions, values)
    check_values(PhysicsSwitches, physics)
    check_options(plugin_executor_options(), plugins)
    return RunOptions(**values, physics=physics, executor_options=plugins)


def submit_options_from(args: argparse.Namespace) -> SubmitOptions:
    """How a job array is cut and followed, each value checked, its backend's own options too."""
    values = {o.dest: getattr(args, o.dest) for o in options_of(SubmitOptions)}
    backend = {o.dest: getattr(args, o.dest) for o in backend_options()}
    check_values(SubmitOptions, values)
    check_options(backend_options(), backend)
    return SubmitOptions(**values, backend=backend)
