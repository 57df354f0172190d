"""The command line's parser as the CLI reference page shows it (sphinx-argparse's `argparse` directive).

It is `coffea_dispatch.cli.build_parser()`'s parser, with each option's help expanded by that parser's own help
formatter as `coffea-dispatch <command> --help` expands it (`%(default)s`, the list of executors): the
directive reads the raw help strings and would print the placeholders.
"""

from __future__ import annotations

import argparse

from coffea_dispatch.cli import build_parser


def parser() -> argparse.ArgumentParser:
    """Every command's parser, help strings expanded in place."""
    top = build_parser()
    _expand(top)
    return top


def _expand(parser: argparse.ArgumentParser) -> None:
    formatter = parser._get_formatter()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                _expand(command)
        elif action.help and action.help is not argparse.SUPPRESS and "%(" in action.help:
            action.help = formatter._expand_help(action)
