"""Directories written whole or not at all: the one helper behind adapters, checkpoints and the model cache.

    >>> with atomic_directory(Path("runs/x/adapter")) as tmp:     # doctest: +SKIP
    ...     (tmp / "card.json").write_text("{}")
    >>> recover_directory(Path("runs/x/adapter"))                  # doctest: +SKIP

A save writes everything into a hidden temporary sibling, then swaps it in:

    1. target -> .target.old            (when there is a previous one)
    2. .target.tmp<pid> -> target
    3. .target.old removed

A crash before step 2 leaves the previous directory, at `target` or (after step 1) at `.target.old`; readers call
`recover_directory`, which moves `.target.old` back when `target` is missing. A crash after step 2 leaves the new
one (and an `.old` that the next save removes). An exception inside the `with` block removes the temporary
folder and leaves `target` as it was. One writer per target at a time (the embedded cache takes a file lock).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterator


def sibling(target: Path, kind: str) -> Path:
    """A hidden sibling of `target` ('.NAME.old', '.NAME.tmp123'): folder listings that skip dot-names skip it."""
    return target.with_name(f".{target.name}.{kind}")


def recover_directory(target: str | os.PathLike) -> Path:
    """`target`, with the previous version moved back if a save was interrupted between its two renames."""
    target = Path(target)
    old = sibling(target, "old")
    if not target.exists() and old.is_dir():
        os.rename(old, target)
    return target


def replace_directory(tmp: Path, target: Path) -> None:
    """Move the fully written directory `tmp` to `target`, replacing what was there (steps 1-3 above)."""
    old = sibling(target, "old")
    if target.exists():
        shutil.rmtree(old, ignore_errors=True)  # left by a save that crashed while removing it
        os.rename(target, old)
    os.rename(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside `target`; when the block ends without error, it becomes `target`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = sibling(target, f"tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        replace_directory(tmp, target)
    except BaseException:  # Ctrl-C included: never leave a half-written folder behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
