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
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Identity:
    """What binds a dump or a submission to a configuration: the digest of its state, or, where that cannot be
    digested, a digest of this call's alone (nothing earlier matches it) and why."""

    digest: str
    unverifiable: str | None = None


def identity_of(value: Any, root: str = "processor") -> Identity:
    """`value`'s Identity: its state_digest, or a unique one saying where its state cannot be compared."""
    try:
        return Identity(state_digest(value, root))
    except Undigestible as error:
        return Identity(
            f"unique {uuid.uuid4().hex}", f"state at {error.where} is {error.why}, which cannot be compared"
        )


def state_digest(value: Any, root: str = "processor") -> str:
    """A short hex digest of `value`'s class and content, equal in every process for equal content."""
    try:
        return _Walk(root).digest(value)[:DIGEST_LENGTH]
    except RecursionError:
        raise Undigestible(root, "nested too deeply to digest") from None


def qualified_name(kind: type | Callable) -> str:
    return f"{getattr(kind, '__module__', None)}.{getattr(kind, '__qualname__', repr(kind))}"


class _Walk:
    """One digest computation: values on the current path (a cycle is digested as a back-reference), and the
    digests of values already walked (a value shared by many attributes is walked once)."""

    def __init__(self, root: str):
        self.root = root
        self.path: list[int] = []
        self.cycles = 0  # back-references digested so far: a value whose walk met none is memoised
        self.memo: dict[int, tuple[Any, str]] = {}  # id -> (the value, kept alive so its id is not reused; digest)

    def digest(self, value: Any, where: str | None = None) -> str:
        where = where or self.root
        if isinstance(value, SCALARS):
            return _hash(type(value).__name__, repr(value))
        if id(value) in self.path:
            self.cycles += 1
            return _hash("cycle", str(len(self.path) - self.path.index(id(value))))
        if id(value) in self.memo:
            return self.memo[id(value)][1]
        cycles = self.cycles
        self.path.append(id(value))
        try:
            digest = self._content(value, where)
        finally:
            self.path.pop()
        if self.cycles == cycles:  # the same wherever it is met
            self.memo[id(value)] = (value, digest)
        return digest

    def _content(self, value: Any, where: str) -> str:
        if isinstance(value, (bytes, bytearray, memoryview)):
            return _hash("bytes", bytes(value))
        if isinstance(value, (list, tuple, dict, set, frozenset)):
            return self._container(value, where)
        if isinstance(value, numpy.ndarray | numpy.generic):
            return self._array(value, where)
        if isinstance(value, numpy.dtype):
            return _hash("dtype", repr(value.descr) if value.fields else value.str)
        if isinstance(value, type):
            return self._class(value, where)
        if isinstance(value, enum.Enum):
            return _hash("enum", qualified_name(type(value)), value.name)
        if isinstance(value, types.ModuleType):
            return _hash("module", value.__name__)
        if isinstance(value, numpy.ufunc):
            return _hash("ufunc", value.__name__)
        return self._callable_or_object(value, where)

    def _container(self, value: list | tuple | dict | set | frozenset, where: str) -> str:
        """Lists and tuples in order, dicts and sets in a canonical order; a subclass with its own attributes
        (a defaultdict's factory) with them."""
        if isinstance(value, dict):
            parts = sorted(self._item(k, v, where) for k, v in value.items())
        elif isinstance(value, (set, frozenset)):
            parts = sorted(self.digest(v, f"{where}{{}}") for v in value)
        else:
            parts = [self.digest(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, defaultdict):
            parts.append(self.digest(value.default_factory, f"{where}.default_factory"))
        if type(value) not in (list, tuple, dict, set, frozenset, defaultdict) and hasattr(value, "__dict__"):
            parts.append(self._state(vars(value), where))
        return _hash(qualified_name(type(value)), *parts)

    def _item(self, key: Any, value: Any, where: str) -> str:
        return _hash(self.digest(key, where), self.digest(value, f"{where}[{key!r}]"))

    def _array(self, value: numpy.ndarray | numpy.generic, where: str) -> str:
        array = numpy.ascontiguousarray(value)
        dtype = self.digest(array.dtype, where)
        if array.dtype.hasobject:
            return _hash("objects", dtype, str(array.shape), *(self.digest(v, f"{where}[...]") for v in array.ravel()))
        return _hash("array", dtype, str(array.shape), array.tobytes())

    def _class(self, kind: type, where: str) -> str:
        """By name where it can be imported by name; a class of __main__ or of a notebook (sent by value, and
        edited between calls) also by what it defines: its methods' code, its class attributes, its bases."""
        named = _hash("class", qualified_name(kind))
        if not _by_value(kind):
            return named
        defined = {k: v for k, v in vars(kind).items() if _defines(k)}
        return _hash(named, self.digest(kind.__bases__, where), self._state(defined, f"{where}.{kind.__name__}"))

    def _callable_or_object(self, value: Any, where: str) -> str:
        if isinstance(value, functools.partial):
            parts = (self.digest(value.func, where), self.digest(value.args, where), self.digest(value.keywords, where))
            return _hash("partial", *parts)
        if isinstance(value, types.MethodType):
            return _hash("method", self.digest(value.__func__, where), self.digest(value.__self__, where))
        if isinstance(value, (staticmethod, classmethod)):
            return _hash(type(value).__name__, self.digest(value.__func__, where))
        if isinstance(value, property):
            return _hash("property", self.digest([value.fget, value.fset, value.fdel], where))
        if isinstance(value, types.FunctionType):
            return self._function(value, where)
        if isinstance(value, _OPAQUE_CALLABLES):
            return _hash("builtin", qualified_name(value))
        return self._object(value, where)

    def _function(self, function: types.FunctionType, where: str) -> str:
        """By name where it can be imported by name; otherwise (a lambda, a closure, a function of __main__ or
        of a notebook) by its code, defaults, captured values and the globals it reads (a cut kept in a
        script's global variable is part of the configuration)."""
        named = _hash("function", qualified_name(function))
        if not _by_value(function):
            return named
        captured = [cell.cell_contents for cell in function.__closure__ or () if _filled(cell)]
        names = sorted(_global_names(function.__code__) & set(function.__globals__))
        read = {name: function.__globals__[name] for name in names}
        parts = (self._code(function.__code__), self.digest(function.__defaults__, where))
        return _hash(named, *parts, self.digest(captured, where), self._state(read, f"{where}<globals>"))

    def _code(self, code: types.CodeType) -> str:
        constants = [self._code(c) if isinstance(c, types.CodeType) else self.digest(c) for c in code.co_consts]
        return _hash("code", code.co_code, *constants, *code.co_names)

    def _object(self, value: Any, where: str) -> str:
        """Any other object by what pickling it would keep (its reduction, copyreg's where it has one), read
        rather than serialised."""
        try:
            reducer = copyreg.dispatch_table.get(type(value))
            reduced = reducer(value) if reducer is not None else value.__reduce_ex__(4)
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


def _by_value(named: type | types.FunctionType) -> bool:
    """Not importable by its name (of __main__, a notebook, or defined inside a function): what it is must be
    read from its definition, as cloudpickle sends it."""
    return getattr(named, "__module__", None) in ("__main__", None) or "<" in named.__qualname__


def _defines(name: str) -> bool:
    """A class attribute that is the class's own definition (not Python's bookkeeping: __dict__, abc's cache)."""
    return (not name.startswith("__") or name in ("__init__", "__call__")) and not name.startswith("_abc_")


def _global_names(code: types.CodeType) -> set[str]:
    """The global names a function's code (and the code of the functions it defines) may read."""
    names = set(code.co_names)
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            names |= _global_names(constant)
    return names


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
