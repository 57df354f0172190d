"""The code blocks of the documentation (docs/**/*.md, README.md) as sybil examples: run, or checked.

The conventions (docs/contributing.md, "Set up, test, benchmark, build the docs", says them to contributors):
- ```python runs, the blocks of one page in one namespace, in page order, in the page's own folder;
- ```console runs each line that starts with `$ ` in bash in that folder: it must exit 0, or N when the line ends
  with `# exits N`; the other lines are sample output, not compared;
- a block preceded by the MyST comment `% check-only` (in the README, where GitHub would show that line:
  `<!-- check-only -->`) is checked, not run (what needs a batch system, the grid,
  EOS or another host): Python is compiled, and each call of `coffea_dispatch.run`, `.executor` or `.cluster`
  whose keyword values are literals goes through the API's own checks with nothing started (the run and the
  cluster's client are stood in for); each `coffea-dispatch ...` command line is parsed by the command line's
  own parser and its values checked as `coffea-dispatch run` checks them;
- ```text, json, yaml, toml, ini and none are not run; a ```json block preceded by `% file: PATH` is written to
  PATH in the page's folder before the blocks after it run;
- any other block (```bash, a block without a language) fails: each block says which of these it is.
"""

from __future__ import annotations

import ast
import contextlib
import inspect
import io
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

from sybil import Document, Example, Region, Sybil
from sybil.parsers.markdown.lexers import RawFencedCodeBlockLexer

import coffea_dispatch

NOT_RUN = {"text", "json", "yaml", "toml", "ini", "none"}
SHELLS = {"console", "shell", "bash", "sh"}  # executed: console only; the others only under % check-only
CHECKED_CALLS = ("run", "executor", "cluster")
EXITS = re.compile(r"#\s*exits\s+(\d+)\s*$")
# MyST's comment `% check-only`, or the same in an HTML comment, which GitHub hides too (the README)
MARKER = re.compile(r"^(?:%|<!--)\s*(check-only|file:\s*(?P<path>\S+?))\s*(?:-->)?\s*$")
COMMAND_SECONDS = 600
# a command, not a folder's name: at a line's or a command's start, after variables and wrappers (nohup, srun -n 1)
INVOKED = re.compile(
    r"(?:^|[;&|(]\s*)(?:\w+=\S*\s+)*(?:(?:nohup|time|exec|env|srun|sudo)\s[^;&|]*?)?(?:\S*/)?coffea-dispatch(?:\s|$)"
)
WRAPPERS = {"nohup", "time", "exec", "env", "srun", "sudo"}


class DocsBlockParser:
    """Every fenced block of a page as one example (MyST directives such as ```{toctree} are left alone)."""

    def __init__(self) -> None:
        self.lexer = RawFencedCodeBlockLexer(
            info_pattern=re.compile(r"(?P<language>[^\n]*)$\n", re.MULTILINE),
            mapping={"language": "language", "source": "source"},
        )

    def __call__(self, document: Document) -> Iterator[Region]:
        for region in self.lexer(document):
            language = region.lexemes["language"].strip().split(" ")[0].lower()
            if language.startswith("{"):  # a MyST directive: the site's, not an example
                continue
            marker = marker_before(document.text, region.start)
            region.parsed = (language, marker, region.lexemes["source"])
            region.evaluator = evaluate
            yield region


def marker_before(text: str, start: int) -> tuple[str, str] | None:
    """`("check-only", "")` or `("file", path)` when the last non-blank line before a block is such a comment."""
    for line in reversed(text[:start].splitlines()):
        if not line.strip():
            continue
        found = MARKER.match(line.strip())
        if not found:
            return None
        return ("file", found.group("path")) if found.group("path") else ("check-only", "")
    return None


def evaluate(example: Example) -> str | None:
    language, marker, source = example.parsed
    kind = marker[0] if marker else None
    if kind == "file":
        if language != "json":
            return f"`% file:` precedes a ```{language} block: only ```json blocks are written to a file"
        Path(marker[1]).parent.mkdir(parents=True, exist_ok=True)
        Path(marker[1]).write_text(str(source))
        return None
    if language in NOT_RUN:
        return None
    if language == "python":
        return check_python(example, str(source)) if kind else run_python(example)
    if language in SHELLS and kind:
        return check_shell(str(source))
    if language == "console":
        return run_console(str(source))
    return (
        f"a ```{language or '(no language)'} block is neither run nor checked: make it ```python or ```console, "
        "mark it `% check-only`, or make it ```text (docs/contributing.md: the code-block conventions)"
    )


def run_python(example: Example) -> None:
    """Executed as a script's code: a class a block defines belongs to `__main__`, as in a script or notebook."""
    source = example.parsed[2]
    code = compile("\n" * (example.line + source.line_offset) + str(source), example.path, "exec", dont_inherit=True)
    example.namespace.setdefault("__name__", "__main__")
    exec(code, example.namespace)


def commands(source: str) -> Iterator[tuple[str, int]]:
    """Each `$ ` line (with the lines a trailing backslash continues) and the exit status it must give."""
    lines = source.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.startswith("$ "):
            continue
        command = line[2:]
        while command.endswith("\\") and i < len(lines):
            command = command[:-1] + " " + lines[i].strip()
            i += 1
        exits = EXITS.search(command)
        yield command, int(exits.group(1)) if exits else 0


def run_console(source: str) -> str | None:
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    for command, expected in commands(source):
        done = subprocess.run(
            ["bash", "-c", command],
            capture_output=True,
            text=True,
            env=env,
            stdin=subprocess.DEVNULL,
            timeout=COMMAND_SECONDS,
        )
        if done.returncode != expected:
            said = (done.stdout + done.stderr)[-3000:]
            return f"$ {command}\nexited {done.returncode}, the page says {expected}:\n{said}"
    return None


def check_shell(source: str) -> str | None:
    """Each `coffea-dispatch ...` command of the `$ ` lines, parsed and checked as the command line would."""
    for command, expected in commands(source):
        if not INVOKED.search(command):
            continue  # pip, git, ssh, condor_q, make: not run, not parsed
        try:
            invocations = list(coffea_dispatch_commands(command))
        except ValueError as error:  # shlex: an unclosed quote
            return f"$ {command}\nnot a shell command line ({error})"
        for argv in invocations:
            refused = check_command_line(argv)
            if refused and expected == 0:
                return f"$ {command}\n{refused}"
    return None


def invocation_start(words: list[str]) -> int | None:
    """Where `coffea-dispatch` stands in a command's words: first, or after `VAR=value`s and a wrapper command
    (`nohup`, `srun -n 1`)."""
    names = [Path(word).name for word in words]
    first = next((i for i, word in enumerate(words) if not re.match(r"\w+=", word)), len(words))
    if first < len(words) and (names[first] == "coffea-dispatch" or words[first] in WRAPPERS):
        return names.index("coffea-dispatch") if "coffea-dispatch" in names[first:] else None
    return None


def coffea_dispatch_commands(command: str) -> Iterator[list[str]]:
    """The `coffea-dispatch` invocations of a shell line, cut at `|`, `&&`, `;`, `>` and comments."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    words: list[str] = []
    for token in [*lexer, ";"]:
        if token and set(token) <= set("|&;<>()"):
            start = invocation_start(words)
            if start is not None:
                yield words[start + 1 :]
            words = [] if token != ">" else ["(redirected)"]
        else:
            words.append(token)


def check_command_line(argv: list[str]) -> str | None:
    """None when `coffea-dispatch argv` parses and its values pass the command line's checks; else why not."""
    from coffea_dispatch.arguments import run_options_from, submit_options_from
    from coffea_dispatch.cli import build_parser
    from coffea_dispatch.errors import DispatchError
    from coffea_dispatch.executors.registry import settings_for

    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said), contextlib.redirect_stdout(io.StringIO()):
            args = build_parser().parse_args(argv)
            if args.command == "run":
                settings_for(run_options_from(args))  # the executor's name and its own values, as a run checks them
                submit_options_from(args)
    except SystemExit as exit:
        return None if exit.code in (0, None) else f"refused by coffea-dispatch's parser: {said.getvalue().strip()}"
    except DispatchError as error:
        return f"refused by coffea-dispatch's checks: {error.message}"
    return None


def check_python(example: Example, source: str) -> str | None:
    """Compiled; every call of run/executor/cluster with literal keyword values checked against the API."""
    try:
        tree = ast.parse(source, filename=example.path)
    except SyntaxError as error:
        return f"does not compile: {error}"
    names = example.namespace.setdefault("__check_only_names__", {})  # from coffea_dispatch import run as go
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "coffea_dispatch":
            names.update({(a.asname or a.name): a.name for a in node.names if a.name in CHECKED_CALLS})
        if isinstance(node, ast.Import):
            names.update({a.asname or a.name: "module" for a in node.names if a.name == "coffea_dispatch"})
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            called = called_name(node.func, names)
            if called is not None:
                refused = check_call(called, node)
                if refused:
                    return f"line {node.lineno}: coffea_dispatch.{called}(...): {refused}"
    return None


def called_name(func: ast.expr, names: dict[str, str]) -> str | None:
    if isinstance(func, ast.Name) and names.get(func.id) in CHECKED_CALLS:
        return names[func.id]
    attribute = isinstance(func, ast.Attribute) and func.attr in CHECKED_CALLS and isinstance(func.value, ast.Name)
    if attribute and (names.get(func.value.id) == "module" or func.value.id == "coffea_dispatch"):
        return func.attr
    return None


class Unchecked:
    """A value the block computes (a fileset, a processor, a function): stands in when binding the signature."""


def literal(node: ast.expr) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, SyntaxError, TypeError):
        return Unchecked()


def check_call(called: str, node: ast.Call) -> str | None:
    """The call bound to the function's signature; with literal keyword values, run through the API's checks."""

    if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
        return None  # *args or **options: nothing to bind
    args = [literal(a) for a in node.args]
    keywords = {k.arg: literal(k.value) for k in node.keywords}
    function = getattr(coffea_dispatch, called)
    try:
        inspect.signature(function).bind(*args, **keywords)
    except TypeError as error:
        return str(error)
    if called == "run":
        args = [a if not isinstance(a, Unchecked) else {"dataset": ["file.root"]} for a in args[:1]] + args[1:]
    checked = {k: v for k, v in keywords.items() if not isinstance(v, Unchecked) or k == "announce"}
    checked = {k: (print if k == "announce" and isinstance(v, Unchecked) else v) for k, v in checked.items()}
    if called != "run" and any(isinstance(a, Unchecked) for a in args):
        return None  # a computed executor name: bound to the signature only
    for name in set(keywords) - set(checked):  # a value the block computes: its keyword's name still checked
        refused = refusal(called, function, args, {**checked, name: Unchecked()})
        if refused and "unknown option" in refused:
            return refused
    return refusal(called, function, args, checked)


def refusal(called: str, function: Any, args: list, keywords: dict) -> str | None:
    """The API's own refusal of these values, nothing started; None when it takes them."""
    from coffea_dispatch.errors import DispatchError

    try:
        with nothing_started():
            if called == "cluster":
                with function(*args, **keywords):
                    pass
            else:
                function(*args, **keywords)
    except DispatchError as error:
        return error.message
    return None


@contextlib.contextmanager
def nothing_started() -> Iterator[None]:
    """run() checks every value and sizes its executor, then stops before reading its inputs; cluster() checks
    its options and builds its executor, then yields no client."""
    from coffea_dispatch import api
    from coffea_dispatch.executors import cluster as cluster_module
    from coffea_dispatch.pipeline.prepare import Given

    with (
        mock.patch.object(api, "_inputs", lambda fileset, processor: (Given(), "check-only.json")),
        mock.patch.object(api, "run_analysis", lambda settings, submit, given: None),
        mock.patch.object(cluster_module, "dask_client", lambda kind, settings, announce: contextlib.nullcontext()),
    ):
        yield


def docs_sybil() -> Sybil:
    return Sybil(parsers=[DocsBlockParser()], patterns=["*.md"])


def document_of(path: Path) -> Document:
    return docs_sybil().parse(path)
