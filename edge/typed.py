"""Typed, validated, frozen records: the run configuration, the component configuration and the artifact manifest.

A ``Record`` subclass is a frozen, keyword-only dataclass whose fields are converted and checked against their
annotations whenever one is made (``Record.parse`` from a mapping, or the constructor): nested records from
mappings, tuples and lists from sequences, whole floats as ints, strings as paths; ``field`` adds bounds,
lengths, a pattern, a check and a description. Every problem is reported with its dotted location, all of them
in one ``Invalid`` error, and a key the record doesn't have is named with the nearest one it does have.

This replaces pydantic in the edge process: its import and compiled validators cost the process memory before a
frame is read and at its peak, and it is one compiled wheel less on an ARM box.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

MISSING = dataclasses.MISSING
Location = tuple  # of keys and list indexes, outermost first
_CONSTRAINTS = ("ge", "gt", "le", "lt", "min_length", "max_length", "pattern", "check")


class Invalid(ValueError):
    """What is wrong with a record's input: (location, message) pairs, all of them, as one line."""

    def __init__(self, problems: list[tuple[Location, str]]):
        self.problems = problems
        super().__init__("; ".join(f"{'.'.join(map(str, loc)) or '(top)'}: {msg}" for loc, msg in problems))

    def at(self, *outer) -> "Invalid":
        return Invalid([((*outer, *loc), msg) for loc, msg in self.problems])


def field(default=MISSING, *, default_factory=MISSING, description: str = "", alias: str | None = None,
          ge=None, gt=None, le=None, lt=None, min_length: int | None = None, max_length: int | None = None,
          pattern: str | None = None, check=None):
    """A record field: its default, what it means, and what it must satisfy besides its type. ``check(value)``
    raises ``ValueError`` with a message to reject a value; ``alias``: its key in mappings (and dumps)."""
    limits = dict(ge=ge, gt=gt, le=le, lt=lt, min_length=min_length, max_length=max_length, pattern=pattern,
                  check=check, alias=alias)
    metadata = {"description": description, **{k: v for k, v in limits.items() if v is not None}}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


class Record:
    """Base of the validated records (see the module). ``check(self)`` in a subclass validates across fields:
    raise ``ValueError`` with the message."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        dataclasses.dataclass(frozen=True, kw_only=True)(cls)

    def __post_init__(self):
        hints = _hints(type(self))
        problems: list[tuple[Location, str]] = []
        for f in dataclasses.fields(self):
            try:
                object.__setattr__(self, f.name, _field_value(f, getattr(self, f.name), hints))
            except Invalid as exc:
                problems += exc.problems
        if not problems:
            try:
                self.check()
            except ValueError as exc:
                problems.append(((), str(exc)))
        if problems:
            raise Invalid(problems)

    def check(self) -> None:
        """Checks across fields, after each field is valid on its own (none by default)."""

    @classmethod
    def parse(cls, data, *, lax: bool = False):
        """A record from a mapping of keys (aliases where a field has one). ``lax``: strings (and whole floats)
        are first read as the types the fields ask for where that is unambiguous (``"0.5"``, ``"true"``,
        ``"15.0"``, JSON text for structures, ``""`` or ``"null"`` for an optional section), as configuration
        passed through systems that keep only strings needs. Raises ``Invalid``."""
        if isinstance(data, cls):
            return data
        if not isinstance(data, dict):
            raise Invalid([((), f"expected a mapping of keys, got {type(data).__name__}")])
        if lax:
            data = loosen(data, cls)
        by_key = {_key(f): f for f in dataclasses.fields(cls)}
        problems = [((key,), _unknown(key, by_key)) for key in data if key not in by_key]
        missing = [((key,), "required") for key, f in by_key.items()
                   if key not in data and f.default is MISSING and f.default_factory is MISSING]
        kwargs = {by_key[key].name: value for key, value in data.items() if key in by_key}
        record = None
        if missing:  # can't be made: still check the keys given
            hints = _hints(cls)
            for key, value in data.items():
                if key in by_key:
                    try:
                        _field_value(by_key[key], value, hints)
                    except Invalid as exc:
                        problems += exc.problems
        else:
            try:
                record = cls(**kwargs)
            except Invalid as exc:
                problems += exc.problems
        if problems or missing:
            raise Invalid(missing + problems)
        object.__setattr__(record, "_given", frozenset(kwargs))
        return record

    @property
    def given(self) -> frozenset[str]:
        """The fields ``parse`` found in its mapping (empty for a record made otherwise)."""
        return getattr(self, "_given", frozenset())

    def replace(self, **changes):
        """A copy with ``changes``, validated again."""
        return dataclasses.replace(self, **changes)

    def dump(self, *, exclude_none: bool = False, exclude=(), include=None, by_alias: bool = False) -> dict:
        """The record as JSON-ready data (nested records as mappings, tuples as lists, paths as strings)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in exclude or (include is not None and f.name not in include) or (exclude_none and value is None):
                continue
            out[_key(f) if by_alias else f.name] = _plain(value, exclude_none, by_alias)
        return out

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))


def _key(f: dataclasses.Field) -> str:
    return f.metadata.get("alias", f.name)


def _field_value(f: dataclasses.Field, value, hints: dict[str, Any]):
    """``value`` converted to field ``f``'s type and checked against its constraints, or ``Invalid`` at its key."""
    value = _convert(value, hints[f.name], (_key(f),))
    _constrain(value, f.metadata, (_key(f),))
    return value


def _unknown(key, by_key: dict) -> str:
    near = [k for k, f in by_key.items() if f.name == key] or difflib.get_close_matches(str(key), list(by_key), n=1)
    return "unknown key" + (f" (did you mean {near[0]}?)" if near else f"; the keys here are {', '.join(by_key)}")


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    """The fields' annotations as types, resolved once per class (after the module defined them all)."""
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _fail(loc: Location, message: str) -> Invalid:
    return Invalid([(loc, message)])


def _describe(value) -> str:
    return f"{value!r}" if isinstance(value, (str, int, float, bool)) or value is None else type(value).__name__


def _convert(value, tp, loc: Location):
    """``value`` as type ``tp`` (converted where the conversion is lossless), or ``Invalid``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        first = None
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(value, option, loc)
            except Invalid as exc:
                first = first or exc
        raise first
    if origin is Literal:
        for choice in args:
            if value == choice and type(value) is type(choice):
                return choice
        raise _fail(loc, f"must be one of {', '.join(map(repr, args))}, got {_describe(value)}")
    if isinstance(tp, type) and issubclass(tp, Record):
        if isinstance(value, tp):
            return value
        try:
            return tp.parse(value)
        except Invalid as exc:
            raise exc.at(*loc) from None
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _fail(loc, f"must be true or false, got {_describe(value)}")
    if tp is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _fail(loc, f"must be a whole number, got {_describe(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _fail(loc, f"must be a number, got {_describe(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise _fail(loc, f"must be text, got {_describe(value)}")
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise _fail(loc, f"must be a path, got {_describe(value)}")
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise _fail(loc, f"must be a mapping, got {_describe(value)}")
        if not args:
            return dict(value)
        return _items(((_convert(k, args[0], (*loc, k)), v) for k, v in value.items()),
                      lambda kv: (kv[0], _convert(kv[1], args[1], (*loc, kv[0]))), dict)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise _fail(loc, f"must be a list, got {_describe(value)}")
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise _fail(loc, f"must have exactly {len(args)} items, got {len(value)}")
            return _items(enumerate(value), lambda iv: _convert(iv[1], args[iv[0]], (*loc, iv[0])), tuple)
        return _items(enumerate(value), lambda iv: _convert(iv[1], args[0], (*loc, iv[0])), origin)
    raise TypeError(f"edgecv.edge.typed can't check fields of type {tp!r}")


def _items(items, convert, kind):
    """``kind`` of the converted items; every item's problems, not only the first's."""
    out, problems = [], []
    for item in items:
        try:
            out.append(convert(item))
        except Invalid as exc:
            problems += exc.problems
    if problems:
        raise Invalid(problems)
    return kind(out)


def _constrain(value, meta: typing.Mapping, loc: Location) -> None:
    if value is None or not any(k in meta for k in _CONSTRAINTS):
        return
    bounds = (("ge", lambda v, b: v >= b, ">="), ("gt", lambda v, b: v > b, ">"),
              ("le", lambda v, b: v <= b, "<="), ("lt", lambda v, b: v < b, "<"))
    for name, ok, sign in bounds:
        if name in meta and not ok(value, meta[name]):
            raise _fail(loc, f"must be {sign} {meta[name]}, got {value}")
    unit = "characters" if isinstance(value, str) else "items"
    if "min_length" in meta and len(value) < meta["min_length"]:
        raise _fail(loc, f"must have at least {meta['min_length']} {unit}, got {len(value)}")
    if "max_length" in meta and len(value) > meta["max_length"]:
        raise _fail(loc, f"must have at most {meta['max_length']} {unit}, got {len(value)}")
    if "pattern" in meta and not re.search(meta["pattern"], value):
        raise _fail(loc, f"{value!r} does not match {meta['pattern']}")
    if "check" in meta:
        try:
            meta["check"](value)
        except ValueError as exc:
            raise _fail(loc, str(exc)) from None


def _plain(value, exclude_none: bool, by_alias: bool):
    if isinstance(value, Record):
        return value.dump(exclude_none=exclude_none, by_alias=by_alias)
    if isinstance(value, (list, tuple)):
        return [_plain(v, exclude_none, by_alias) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v, exclude_none, by_alias) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


# --- lax reading: strings towards the declared types --------------------------------------------------------

_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}
_NULL = {"", "null", "none", "~"}


def _number(text: str) -> float | None:
    try:
        return float(text.strip())
    except ValueError:
        return None


def loosen(value, tp):
    """``value`` with strings (and whole floats) turned into what ``tp`` asks for where that is unambiguous;
    anything else is returned unchanged, for validation to report."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if type(None) in args and isinstance(value, str) and value.strip().lower() in _NULL:
            return None
        for option in (a for a in args if a is not type(None)):
            loosened = loosen(value, option)
            if loosened is not value:
                return loosened
        return value
    if origin is Literal:
        if isinstance(value, (str, float)) and not any(value == c and type(value) is type(c) for c in args):
            for choice in args:
                number = _number(value) if isinstance(value, str) else value
                if isinstance(choice, int) and not isinstance(choice, bool) and number == choice:
                    return choice
                if isinstance(choice, str) and isinstance(value, str) and value.strip() == choice:
                    return choice
        return value
    record = isinstance(tp, type) and issubclass(tp, Record)
    if isinstance(value, str) and (record or tp is dict or origin in (dict, list, tuple)):
        try:
            parsed = json.loads(value)  # a structure passed as JSON text
        except ValueError:
            return value
        return loosen(parsed, tp) if isinstance(parsed, (dict, list)) else value
    if tp is int:
        number = _number(value) if isinstance(value, str) else value
        return int(number) if isinstance(number, float) and number.is_integer() else value
    if tp is float and isinstance(value, str):
        number = _number(value)
        return value if number is None else number
    if tp is bool and isinstance(value, str):
        text = value.strip().lower()
        return True if text in _TRUE else False if text in _FALSE else value
    if record and isinstance(value, dict):
        hints = _hints(tp)
        by_key = {_key(f): f.name for f in dataclasses.fields(tp)}
        return {k: loosen(v, hints[by_key[k]]) if k in by_key else v for k, v in value.items()}
    if origin is dict and isinstance(value, dict) and args:
        return {k: loosen(v, args[1]) for k, v in value.items()}
    if origin in (list, tuple) and isinstance(value, list):
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return [loosen(v, args[i]) if i < len(args) else v for i, v in enumerate(value)]
        return [loosen(v, args[0]) for v in value]
    return value
