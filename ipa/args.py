"""Command lines derived from config dataclasses, and one way to report user errors.

Each dataclass field becomes `--field-name`, typed by its default, with the docstring under the field
as its help. User errors print one line and exit with code 2, without a traceback.

    >>> parser = argparse.ArgumentParser()
    >>> add_dataclass_args(parser, DecodeConfig)                  # doctest: +SKIP
    >>> config = dataclass_from_args(DecodeConfig, parser.parse_args())  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import sys
import textwrap
import typing

USER_ERROR_EXIT = 2


@functools.cache
def field_docs(cls) -> dict[str, str]:
    """The docstring written under each field of a dataclass, read from its source."""
    docs = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body
        for node, following in zip(body, body[1:]):
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                if isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant) and isinstance(following.value.value, str):
                    docs[node.target.id] = following.value.value.strip()
    for f in dataclasses.fields(cls):  # a field made in code (dataclasses.make_dataclass) carries its docstring along
        if "doc" in f.metadata:
            docs.setdefault(f.name, f.metadata["doc"])
    return docs


def _arg_type(annotation, default):
    if isinstance(annotation, str):
        text = annotation.replace(" ", "")
        for name, kind in (("bool", bool), ("int", int), ("float", float), ("str", str)):
            if text.startswith(name):
                return kind
    origin = typing.get_origin(annotation)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if args else str
    if isinstance(annotation, type):
        return annotation
    return type(default) if default is not None else str


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else None


def _hints(cls) -> dict:
    try:
        return typing.get_type_hints(cls)
    except (NameError, TypeError):  # an annotation that does not resolve at run time: typed by its default
        return {}


def _nested(cls) -> dict[str, tuple[type, bool]]:
    """Fields of `cls` that are themselves config dataclasses (one concern each): name -> (class, optional). An
    optional concern (`ApiBaseConfig | None`) is None unless its first field's option is given."""
    found = {}
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints.get(f.name)
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(inner) == 1 and len(typing.get_args(hint)) == 2
        kind = inner[0] if optional else hint
        if isinstance(kind, type) and dataclasses.is_dataclass(kind):
            found[f.name] = (kind, optional)
    return found


def field_names(cls) -> list[str]:
    """The names of the options' fields, those of nested concerns included (argparse's dests)."""
    nested = _nested(cls)
    return [name for f in dataclasses.fields(cls)
            for name in (field_names(nested[f.name][0]) if f.name in nested else [f.name])]


def _inner(exclude: tuple[str, ...], name: str) -> tuple[str, ...]:
    return tuple(e.split(".", 1)[1] for e in exclude if e.startswith(name + "."))


def add_dataclass_args(parser: argparse.ArgumentParser, cls, exclude: tuple[str, ...] = (), defaults: dict | None = None,
                       _seen: dict | None = None, _optional: bool = False) -> None:
    """Add one `--kebab-case` option per field of `cls` (booleans become --flag / --no-flag).

    A field holding another config dataclass adds that class's options (flattened: `--lr`, not `--algo.lr`);
    two concerns may not share an option name (`exclude` drops one, as "field" or "concern.field"). An optional
    concern (`ApiBaseConfig | None`) is off by default: its first option's help says so.
    `defaults` replaces defaults by field name (None = "not given", for callers that fill defaults later).
    A field's `metadata={"flag": "base-api"}` names its option where the field name would be unclear.
    """
    seen = {} if _seen is None else _seen
    nested = _nested(cls)
    docs = field_docs(cls)
    hints = _hints(cls)
    group = parser.add_argument_group(cls.__name__)
    for f in dataclasses.fields(cls):
        if f.name in exclude or f.name.startswith("_"):
            continue
        if f.name in nested:
            inner, optional = nested[f.name]
            add_dataclass_args(parser, inner, _inner(exclude, f.name), defaults, seen, optional)
            continue
        default = shown = _default(f)
        if _optional and f is dataclasses.fields(cls)[0]:
            shown = "off"
        if defaults and f.name in defaults:
            default = defaults[f.name]
            if default is not None:
                shown = default
        if isinstance(default, (dict, list)):
            continue
        kind = _arg_type(hints.get(f.name, f.type), default)
        flag = "--" + f.metadata.get("flag", f.name.replace("_", "-"))
        if flag in seen:
            raise TypeError(f"{flag} is a field of both {seen[flag]} and {cls.__name__}: exclude one.")
        seen[flag] = cls.__name__
        help_text = docs.get(f.name, "")
        if kind is bool:
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        else:
            group.add_argument(flag, dest=f.name, type=kind, default=default, help=f"{help_text} (default: {shown})")


def dataclass_from_args(cls, args: argparse.Namespace, exclude: tuple[str, ...] = (), **overrides):
    """Build `cls` from parsed args, nested concerns included (an optional one only when its first field is given);
    fields missing from args, or None there, and those excluded (as add_dataclass_args' `exclude`: their options are
    another concern's) keep their defaults. `overrides` replace values by field name at any depth."""
    values = {}
    nested = _nested(cls)
    for f in dataclasses.fields(cls):
        if f.name in overrides:
            values[f.name] = overrides[f.name]
        elif f.name in exclude:
            continue
        elif f.name in nested:
            inner, optional = nested[f.name]
            if optional and not getattr(args, dataclasses.fields(inner)[0].name, None):
                values[f.name] = None
            else:
                values[f.name] = dataclass_from_args(inner, args, _inner(exclude, f.name), **overrides)
        elif getattr(args, f.name, None) is not None:
            values[f.name] = getattr(args, f.name)
    return cls(**values)


def exit_with_user_error(message: str) -> typing.NoReturn:
    """Print one clear line and exit with code 2 (no traceback for user errors)."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(USER_ERROR_EXIT)
