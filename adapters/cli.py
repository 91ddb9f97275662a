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


def add_dataclass_args(parser: argparse.ArgumentParser, cls, exclude: tuple[str, ...] = (), defaults: dict | None = None) -> None:
    """Add one `--kebab-case` option per field of `cls` (booleans become --flag / --no-flag)."""
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls) if not any(isinstance(f.type, str) for f in dataclasses.fields(cls)) else {}
    group = parser.add_argument_group(cls.__name__)
    for f in dataclasses.fields(cls):
        if f.name in exclude or f.name.startswith("_"):
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        if defaults and f.name in defaults:
            default = defaults[f.name]
        kind = _arg_type(hints.get(f.name, f.type), default)
        flag = "--" + f.name.replace("_", "-")
        help_text = docs.get(f.name, "")
        if isinstance(default, (dict, list)):
            continue
        if kind is bool:
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        else:
            group.add_argument(flag, dest=f.name, type=kind, default=default, help=f"{help_text} (default: {default})")


def dataclass_from_args(cls, args: argparse.Namespace, **overrides):
    """Build `cls` from parsed args (fields missing from args keep their defaults)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
    values.update(overrides)
    return cls(**values)


def exit_with_user_error(message: str) -> typing.NoReturn:
    """Print one clear line and exit with code 2 (no traceback for user errors)."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(USER_ERROR_EXIT)
