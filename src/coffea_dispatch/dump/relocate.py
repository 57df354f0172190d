"""Pointing a processor that writes its own files at a private folder, wherever it keeps the output folder.

HiggsDNA's processors take `output_location` and write under it; others keep it as `self.outdir`, inside a
settings dict, or as a path below it (`<dump>/tables`). A chunk's files must go to a private staging folder
first, to be published only once the chunk returned (no partial file under a final name, a record of exactly
its files). So every value of the processor equal to the output folder or below it (attributes, dict and
list items, attributes of objects it holds, a few levels deep) is rebased onto the staging folder, in a copy;
the original is never changed. Where those values are is found once per run (`references`: a walk over the
processor, which may hold big tables such as a golden JSON); each chunk then only copies along those paths
(`relocated`). A value that cannot be replaced (a read-only mapping, an object that cannot be copied) is
named, so that the run refuses in one line rather than let outputs bypass staging.
"""

from __future__ import annotations

import copy
import os
import types
from collections.abc import Callable, Mapping
from pathlib import PurePath
from typing import Any

MAX_DEPTH = 4  # attribute levels looked into: processor.settings.paths.out
ATTRIBUTE, ITEM = "attribute", "item"
Step = tuple[str, Any]  # (ATTRIBUTE, name) or (ITEM, key or index)
Place = tuple[Step, ...]  # from the processor down to one value
_OPAQUE = (types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType, type)
_SCALARS = (int, float, complex, bool, bytes, bytearray)


class CannotRelocate(Exception):
    """`where` (an attribute path such as `self.settings['out']`) holds the output folder but cannot be replaced."""

    def __init__(self, where: str, why: str):
        super().__init__(f"{where}: {why}")
        self.where = where
        self.why = why


def describe(place: Place) -> str:
    """`self.settings['tables']`, as the user wrote it."""
    return "self" + "".join(f".{key}" if kind == ATTRIBUTE else f"[{key!r}]" for kind, key in place)


def _under(path: str, root: str) -> str | None:
    """`path` relative to `root` ("" for root itself) when it is root or below it, else None."""
    absolute = os.path.abspath(path)
    if absolute == root:
        return ""
    return absolute[len(root) + 1 :] if absolute.startswith(root + os.sep) else None


def _rebaser(root: str, new_root: str) -> Callable[[Any], Any]:
    """Maps a path-like value at or below `root` (as given, or absolute) to the same place below `new_root`.
    Only strings that look like paths count (the folder as given, or text with a separator): with `--dump .`
    every word would otherwise be a path below it."""
    absolute_root = os.path.abspath(root)

    def rebase(value: Any) -> Any:
        text = os.fspath(value) if isinstance(value, (str, PurePath)) else None
        if not text or not (isinstance(value, PurePath) or os.sep in text or text == root):
            return value
        relative = _under(text, absolute_root)
        if relative is None:
            return value
        moved = os.path.join(new_root, relative) if relative else new_root
        return moved if isinstance(value, str) else type(value)(moved)

    return rebase


def _attribute_names(value: Any) -> list[str]:
    """An object's instance attributes: its `__dict__` and its slots."""
    names = list(getattr(value, "__dict__", None) or {})
    for group in (getattr(c, "__slots__", ()) for c in type(value).__mro__):
        names += [group] if isinstance(group, str) else list(group)
    return [n for n in dict.fromkeys(names) if n not in ("__dict__", "__weakref__")]


class _Finder:
    """Walks the processor once, collecting the places whose value `is_path` (what `rebase` would move)."""

    def __init__(self, rebase: Callable[[Any], Any]):
        self.rebase = rebase
        self.found: list[Place] = []
        self.seen: set[int] = set()

    def visit(self, value: Any, place: Place) -> None:
        if isinstance(value, (str, PurePath)):
            if self.rebase(value) is not value:
                self.found.append(place)
            return
        if value is None or isinstance(value, (*_SCALARS, *_OPAQUE)) or len(place) >= MAX_DEPTH:
            return
        if id(value) in self.seen:
            return
        self.seen.add(id(value))
        if isinstance(value, Mapping):
            for key, item in value.items():
                self.visit(item, (*place, (ITEM, key)))
        elif isinstance(value, (list, tuple)):
            for index, item in enumerate(value):
                self.visit(item, (*place, (ITEM, index)))
        else:
            self.members(value, place)

    def members(self, value: Any, place: Place) -> None:
        for name in _attribute_names(value):
            try:
                member = object.__getattribute__(value, name)
            except AttributeError:
                continue
            self.visit(member, (*place, (ATTRIBUTE, name)))


def _get(value: Any, step: Step) -> Any:
    kind, key = step
    return object.__getattribute__(value, key) if kind == ATTRIBUTE else value[key]


def _along(value: Any, places: list[Place], rebase: Callable[[Any], Any], above: Place) -> Any:
    """`value` with the values at `places` (relative to it) rebased: copies only along the way."""
    if () in places:
        return rebase(value)
    below: dict[Step, list[Place]] = {}
    for place in places:
        below.setdefault(place[0], []).append(place[1:])
    changes = {step: _along(_get(value, step), rest, rebase, (*above, step)) for step, rest in below.items()}
    return _with(value, changes, above)


def _with(value: Any, changes: dict[Step, Any], above: Place) -> Any:
    """A shallow copy of `value` with `changes` made; CannotRelocate names the first place that refuses."""
    first = describe((*above, next(iter(changes))))
    try:
        if isinstance(value, Mapping):
            moved = dict(value) if type(value) is dict else copy.copy(value)
            moved.update({key: new for (_, key), new in changes.items()})
            return moved
        if isinstance(value, (list, tuple)):
            items = list(value)
            for (_, index), new in changes.items():
                items[index] = new
            if type(value) in (list, tuple):
                return type(value)(items)
            return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)
        moved = copy.copy(value)
        for (_, name), new in changes.items():
            object.__setattr__(moved, name, new)
        return moved
    except Exception as exc:
        raise CannotRelocate(first, f"it cannot be replaced in a copy of {type(value).__name__} ({exc})") from None


def references(processor: Any, root: str) -> list[Place]:
    """Where `processor` keeps `root` or a path below it (`self.output_location`, `self.settings['out']`, ...);
    raises CannotRelocate where one of them could not be replaced."""
    finder = _Finder(_rebaser(root, os.path.join(os.sep, "staging-probe")))
    finder.members(processor, ())
    if finder.found:
        relocated(processor, root, os.path.join(os.sep, "staging-probe"), finder.found)
    return finder.found


def relocated(processor: Any, root: str, new_root: str, places: list[Place]) -> Any:
    """A copy of `processor` with the paths at `places` (from `references`) moved from `root` to `new_root`."""
    return _along(processor, places, _rebaser(root, new_root), ()) if places else processor
