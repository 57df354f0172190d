"""A processor's configuration as a digest that is the same in every process: what binds a dump or a job
array's folder to the configuration that made it.

Pickled bytes cannot do this: cloudpickle writes a class of `__main__` or of a notebook by value (with
addresses and code positions that differ between processes), and a set's order changes with the hash seed.
Here the processor is walked instead: its class by name, its attributes (and what they hold) by value, dicts
and sets in a canonical order, arrays by their bytes, functions by name or, where they have no importable
name, by their code. What cannot be walked (an open file, a lock, a C++ object that does not pickle) is not
guessed at: `Undigestible` names where it is, and the caller refuses to reuse anything rather than trust it.
"""

from __future__ import annotations

import copyreg
import enum
import functools
import hashlib
import types
from collections.abc import Callable
from typing import Any

import numpy

DIGEST_LENGTH = 16  # hex characters
SCALARS = (type(None), bool, int, float, complex, str)
_OPAQUE_CALLABLES = (types.BuiltinFunctionType, types.MethodDescriptorType, types.WrapperDescriptorType)


class Undigestible(Exception):
    """The state holds a value that has no stable content to digest; `where` is its path from the root."""

    def __init__(self, where: str, why: str):
        super().__init__(f"{where}: {why}")
        self.where = where
        self.why = why


def state_digest(value: Any, root: str = "processor") -> str:
    """A short hex digest of `value`'s class and content, equal in every process for equal content."""
    try:
        return _Walk(root).digest(value)[:DIGEST_LENGTH]
    except RecursionError:
        raise Undigestible(root, "nested too deeply to digest") from None


def qualified_name(kind: type | Callable) -> str:
    return f"{getattr(kind, '__module__', None)}.{getattr(kind, '__qualname__', repr(kind))}"


class _Walk:
    """One digest computation: values on the current path (to digest a cycle as a back-reference)."""

    def __init__(self, root: str):
        self.root = root
        self.path: list[int] = []

    def digest(self, value: Any, where: str | None = None) -> str:
        where = where or self.root
        if id(value) in self.path and not isinstance(value, SCALARS):
            return _hash("cycle", str(len(self.path) - self.path.index(id(value))))
        self.path.append(id(value))
        try:
            return self._content(value, where)
        finally:
            self.path.pop()

    def _content(self, value: Any, where: str) -> str:
        if isinstance(value, SCALARS):
            return _hash(type(value).__name__, repr(value))
        if isinstance(value, (bytes, bytearray, memoryview)):
            return _hash("bytes", bytes(value))
        if isinstance(value, (list, tuple)):
            return _hash(type(value).__name__, *(self.digest(v, f"{where}[{i}]") for i, v in enumerate(value)))
        if isinstance(value, dict):
            return _hash(type(value).__name__, *sorted(self._item(k, v, where) for k, v in value.items()))
        if isinstance(value, (set, frozenset)):
            return _hash("set", *sorted(self.digest(v, f"{where}{{}}") for v in value))
        if isinstance(value, numpy.ndarray | numpy.generic):
            return _array_digest(value, where)
        if isinstance(value, type):
            return _hash("class", qualified_name(value))
        if isinstance(value, enum.Enum):
            return _hash("enum", qualified_name(type(value)), value.name)
        if isinstance(value, types.ModuleType):
            return _hash("module", value.__name__)
        return self._callable_or_object(value, where)

    def _item(self, key: Any, value: Any, where: str) -> str:
        return _hash(self.digest(key, where), self.digest(value, f"{where}[{key!r}]"))

    def _callable_or_object(self, value: Any, where: str) -> str:
        if isinstance(value, functools.partial):
            parts = (self.digest(value.func, where), self.digest(value.args, where), self.digest(value.keywords, where))
            return _hash("partial", *parts)
        if isinstance(value, types.MethodType):
            return _hash("method", self.digest(value.__func__, where), self.digest(value.__self__, where))
        if isinstance(value, types.FunctionType):
            return self._function(value, where)
        if isinstance(value, _OPAQUE_CALLABLES):
            return _hash("builtin", qualified_name(value))
        return self._object(value, where)

    def _function(self, function: types.FunctionType, where: str) -> str:
        """By name where it can be imported by name; otherwise (a lambda, a closure, a function of __main__ or
        of a notebook) by its code, defaults and captured values."""
        named = _hash("function", qualified_name(function))
        if function.__module__ not in ("__main__", None) and "<" not in function.__qualname__:
            return named
        captured = [cell.cell_contents for cell in function.__closure__ or () if _filled(cell)]
        parts = (self._code(function.__code__), self.digest(function.__defaults__, where), self.digest(captured, where))
        return _hash(named, *parts)

    def _code(self, code: types.CodeType) -> str:
        constants = [self._code(c) if isinstance(c, types.CodeType) else repr(c) for c in code.co_consts]
        return _hash("code", code.co_code, *constants, *code.co_names)

    def _object(self, value: Any, where: str) -> str:
        """Any other object by what pickling it would keep (its reduction), read rather than serialised."""
        try:
            reduced = value.__reduce_ex__(4)
        except Exception as error:
            raise Undigestible(where, f"a {qualified_name(type(value))} ({_first_line(error)})") from None
        if isinstance(reduced, str):  # a global singleton, pickled by name
            return _hash("global", qualified_name(type(value)), reduced)
        constructor, arguments, *rest = (*reduced, None, None, None)[:5]
        if constructor is copyreg.__newobj__:
            constructor, arguments = arguments[0], arguments[1:]
        state, items, pairs = rest[:3]
        parts = [self.digest(constructor, where), self.digest(arguments, where), self._state(state, where)]
        parts += [self.digest(list(items), where)] if items is not None else []
        parts += [self.digest(dict(pairs), where)] if pairs is not None else []
        return _hash("object", qualified_name(type(value)), *parts)


    def _state(self, state: Any, where: str) -> str:
        """An object's attributes, each under its own name (so that an undigestible one is named)."""
        if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
            return self.digest(state, where)
        return _hash("attributes", *sorted(_hash(k, self.digest(v, f"{where}.{k}")) for k, v in state.items()))


def _array_digest(value: numpy.ndarray | numpy.generic, where: str) -> str:
    array = numpy.ascontiguousarray(value)
    if array.dtype.hasobject:
        walk = _Walk(where)
        return _hash("objects", str(array.shape), *(walk.digest(v, f"{where}[...]") for v in array.ravel()))
    return _hash("array", array.dtype.str, str(array.shape), array.tobytes())


def _filled(cell: types.CellType) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - an empty cell raises
    except ValueError:
        return False
    return True


def _first_line(error: Exception) -> str:
    return (str(error).splitlines() or [type(error).__name__])[0]


def _hash(*parts: str | bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        data = part if isinstance(part, bytes) else part.encode()
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()
