"""One definition per command-line option: a dataclass field says its flag, help and choices once.

`add_options` makes the argparse arguments of an options dataclass, `from_args` reads them back
into an instance, and `to_argv` writes an instance as the same flags (to start the command in the
background), so a command's flags, its options object and a job's argv cannot drift apart.
`values` flattens an instance to a dict (to store or hash it).
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Iterable, Iterator
from typing import Any

_KEY = "infoprune.option"
_NESTED = "nested"


def option(
    default: Any = dataclasses.MISSING,
    *,
    help: str | None = None,
    choices: Iterable[str] | None = None,
    metavar: str | None = None,
    group: str | None = None,
) -> Any:
    """A dataclass field that is also the flag `--field-name`.

    No DEFAULT makes the flag required; a bool field is an off-by-default switch; fields with the
    same GROUP exclude each other; `X | None` fields take an X and are left out of argv when None.
    """
    meta = {"help": help, "metavar": metavar, "group": group}
    meta["choices"] = None if choices is None else tuple(choices)
    return dataclasses.field(default=default, metadata={_KEY: meta})


def nested(cls: type) -> Any:
    """A field holding another options dataclass, whose flags belong to the outer command."""
    return dataclasses.field(default_factory=cls, metadata={_KEY: _NESTED})


def add_options(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add a flag for every option field of CLS (and of its nested options) to PARSER."""
    groups: dict[str, Any] = {}
    for f, meta, kind in _leaves(cls):
        if meta["group"] and meta["group"] not in groups:
            groups[meta["group"]] = parser.add_mutually_exclusive_group()
        target = groups[meta["group"]] if meta["group"] else parser
        kw: dict[str, Any] = {"dest": f.name, "help": meta["help"]}
        if kind is bool:
            kw["action"] = "store_true"
        else:
            kw.update(type=kind, metavar=meta["metavar"], choices=meta["choices"])
            if f.default is dataclasses.MISSING:
                kw["required"] = True
            else:
                kw["default"] = f.default
        target.add_argument(flag_name(f), **kw)


def from_args(cls: type, args: argparse.Namespace) -> Any:
    """An instance of CLS from ARGS parsed by a parser that `add_options(parser, CLS)` set up."""
    kwargs = {}
    for f, meta, kind in _fields(cls):
        kwargs[f.name] = from_args(kind, args) if meta == _NESTED else getattr(args, f.name)
    return cls(**kwargs)


def to_argv(obj: Any) -> list[str]:
    """OBJ's options as flags that `from_args` reads back as OBJ (None and False are left out)."""
    out: list[str] = []
    for f, meta, _kind in _fields(type(obj)):
        value = getattr(obj, f.name)
        if meta == _NESTED:
            out += to_argv(value)
        elif value is True:
            out.append(flag_name(f))
        elif value is not None and value is not False:
            out += [flag_name(f), str(value)]
    return out


def values(obj: Any) -> dict[str, Any]:
    """OBJ's options by field name, those of nested options in the same flat dict."""
    out: dict[str, Any] = {}
    for f, meta, _kind in _fields(type(obj)):
        value = getattr(obj, f.name)
        out.update(values(value) if meta == _NESTED else {f.name: value})
    return out


def flag_name(f: dataclasses.Field) -> str:
    """The flag of option field F, as users type it."""
    return "--" + f.name.replace("_", "-")


def _fields(cls: type) -> Iterator[tuple[dataclasses.Field, Any, type]]:
    """(field, its option metadata, its type without `| None`) for each option field of CLS."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if _KEY in f.metadata:
            kinds = [t for t in typing.get_args(hints[f.name]) if t is not type(None)]
            yield f, f.metadata[_KEY], kinds[0] if kinds else hints[f.name]


def _leaves(cls: type) -> Iterator[tuple[dataclasses.Field, Any, type]]:
    for f, meta, kind in _fields(cls):
        if meta == _NESTED:
            yield from _leaves(kind)
        else:
            yield f, meta, kind
