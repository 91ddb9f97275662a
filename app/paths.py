"""What leaves the playground names no path of the server: the rule, and the one function that applies it.

The rule: a message, a status or a downloaded file names a file or folder by its RELATIVE name, never by its
absolute path. A path inside one of the playground's folders (its runs, its shipped adapters, its data, the
repository) is written from that folder on, the folder named by its place in the repository (runs/playground/
sentiment-pg-4/adapter), or by its own name when it lies elsewhere; any other absolute path is written as its
last part (a file's or folder's name). Where something is meant by another name (an upload's folder is "the
zip"), that name is given as one more folder.

    >>> public_paths("/srv/ipa/runs/playground/sea-pg-1/adapter is corrupt; /home/ann/x.json is missing",
    ...              {"/srv/ipa/runs/playground": "runs/playground"})
    'runs/playground/sea-pg-1/adapter is corrupt; x.json is missing'

It is applied where text leaves the playground (app.adapter_store.public_text): the errors of the service's
requests, the training status, the problems listed at start, the card and config in a downloaded zip
(app.adapter_files.adapter_zip), and, for a bug's message, the page's pop-up (app.views.error_text). What stays on
the server keeps its absolute paths: a card on disk records where its run was written (a command line resumes and
evaluates from there), and the server's log names every file in full for its operator.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath, PureWindowsPath

_PATH_CHARS = r"[^\s'\"`<>|,;:()\[\]{}*?]"
_ABSOLUTE = re.compile(rf"(?<![\w.:/\\~<>-])/{_PATH_CHARS}+|(?<![\w.])[A-Za-z]:\\{_PATH_CHARS}+")
"""An absolute path in running text: POSIX ('/' not inside a word, a URL or a relative path, not closing a tag),
or Windows ('C:\\...')."""


def public_paths(text: str, folders: Mapping[str | os.PathLike, str] | None = None) -> str:
    """`text` naming no absolute path: one inside a folder of `folders` (folder -> the name to show it by; "" to show
    the path from inside it on) as that name and the rest of the path, any other absolute path by its last part."""
    known = []
    for folder, name in (folders or {}).items():
        for form in {str(Path(folder)), str(Path(folder).resolve())}:
            known.append((form, name))
    for form, name in sorted(known, key=lambda item: -len(item[0])):  # the deepest folder first
        text = re.sub(r"(?<![\w./-])" + re.escape(form) + r"(?![\w.-])(/?)",
                      lambda m, name=name: (name + m.group(1)) if name else ("" if m.group(1) else "."), text)
    return _ABSOLUTE.sub(lambda m: _last_part(m.group(0)), text)


def _last_part(path: str) -> str:
    name = (PureWindowsPath if "\\" in path else PurePosixPath)(path).name
    return name or path


def public_json(data, folders: Mapping[str | os.PathLike, str] | None = None):
    """A JSON value (a card, a config) with public_paths applied to every text in it, keys included."""
    if isinstance(data, str):
        return public_paths(data, folders)
    if isinstance(data, dict):
        return {public_json(key, folders): public_json(value, folders) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [public_json(item, folders) for item in data]
    return data


def folder_names(folders, repository: str | os.PathLike) -> dict[str, str]:
    """Each of the playground's folders -> the name it is shown by: its place in the repository when inside it, else
    its own name; and the repository itself -> "" (a path inside it is shown from the repository on)."""
    root = Path(repository).resolve()
    names = {}
    for folder in folders:
        path = Path(folder).resolve()
        names[str(folder)] = path.relative_to(root).as_posix() if path.is_relative_to(root) and path != root else path.name
    return {**names, str(repository): ""}
