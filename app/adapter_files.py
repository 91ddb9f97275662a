"""Adapters as zip files, for the page's download and upload: only what this project writes, nothing else.

    >>> path = adapter_zip(Path("adapters/trained/sentiment"), Path("/tmp/out"))          # doctest: +SKIP
    >>> folder = unpack_adapter_zip(path, Path("/tmp/in"))   # checked: names, kinds, sizes  # doctest: +SKIP

An adapter folder holds card.json, adapter_config.json, adapter_model.safetensors and, for Quark, reward_tokens
.safetensors (ipa.policy_adapter). A zip is accepted only if it holds exactly such files, flat or under one
folder, JSON and safetensors only (never a pickle, never code), no name that climbs out of its folder, within
MAX_ZIP_MB packed and MAX_UNPACKED_MB unpacked; anything else is one AdapterZipError saying what is wrong. Whether
it fits the playground's base model (its card's fingerprint) is checked when it is loaded (AdapterHost.load_adapter).

A zip the page hands out names no path of the server (app.paths): its JSON files (the card, LoRA's config) are
written through public_json, so a card's training.run.out or run.objective reads runs/playground/sentiment-pg-4,
never the folder it has on the server.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from ipa.errors import UserError
from ipa.policy_adapter import CARD_FILE, CONFIG_FILE, REWARD_TOKENS_FILE, WEIGHTS_FILE
from app.paths import public_json

ADAPTER_FILES = (CARD_FILE, CONFIG_FILE, WEIGHTS_FILE, REWARD_TOKENS_FILE)
"""Every file an adapter folder may hold; the first three it must."""
REQUIRED_FILES = ADAPTER_FILES[:3]
MAX_ZIP_MB = 64
"""The largest zip the page takes (the embedded model's LoRA adapter is about 10 MB)."""
MAX_UNPACKED_MB = 128
"""The most its files may unpack to (a zip bomb stops here)."""


class AdapterZipError(UserError):
    """An adapter zip the playground will not take; the message says why."""


def adapter_zip(folder: Path, out_dir: Path, name: str | None = None,
                folders: Mapping[str | os.PathLike, str] | None = None) -> Path:
    """Zip an adapter folder's files (those of ADAPTER_FILES it has) into out_dir/<name>.zip, under a folder <name>/;
    its JSON files name no absolute path (app.paths.public_json; folders: the playground's, by the names to show)."""
    name = name or folder.name
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for file in ADAPTER_FILES:
            if not (folder / file).is_file():
                continue
            if file.endswith(".json"):
                data = public_json(json.loads((folder / file).read_text(encoding="utf-8")), folders)
                z.writestr(f"{name}/{file}", json.dumps(data, indent=2, allow_nan=False))
            else:
                z.write(folder / file, f"{name}/{file}")
    return path


def _members(z: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """The zip's files by their name inside the adapter folder, after checking every entry."""
    files, folders = {}, set()
    for info in z.infolist():
        path = PurePosixPath(info.filename.replace("\\", "/"))
        if path.is_absolute() or ".." in path.parts or ":" in info.filename:
            raise AdapterZipError(f"The zip holds {info.filename!r}, a path outside its folder: it is refused.")
        if info.is_dir():
            continue
        if info.external_attr >> 16 & 0o170000 == 0o120000:
            raise AdapterZipError(f"The zip holds a link ({info.filename!r}): it is refused.")
        if path.suffix not in (".json", ".safetensors"):
            raise AdapterZipError(f"The zip holds {info.filename!r}: an adapter zip holds only JSON and safetensors files "
                                  f"({', '.join(ADAPTER_FILES)}), never pickles or code.")
        if len(path.parts) > 2:
            raise AdapterZipError(f"The zip holds {info.filename!r}: put the adapter's files at the top or in one folder.")
        if path.name not in ADAPTER_FILES:
            raise AdapterZipError(f"The zip holds {path.name!r}, which is not an adapter file: expected "
                                  f"{', '.join(ADAPTER_FILES)}.")
        if path.name in files:
            raise AdapterZipError(f"The zip holds {path.name!r} twice.")
        folders.add(path.parts[0] if len(path.parts) == 2 else "")
        files[path.name] = info
    if len(folders) > 1:
        raise AdapterZipError("The zip holds files in more than one folder: one adapter a zip.")
    missing = [f for f in REQUIRED_FILES if f not in files]
    if missing:
        raise AdapterZipError(f"The zip is not an adapter made by this project: it has no {', '.join(missing)}.")
    return files


def unpack_adapter_zip(zip_path: Path, out: Path) -> Path:
    """Check an uploaded zip and write its adapter files into the new folder `out`; returns `out`."""
    size_mb = zip_path.stat().st_size / 2**20
    if size_mb > MAX_ZIP_MB:
        raise AdapterZipError(f"The zip is {size_mb:.0f} MB; the playground takes adapter zips up to {MAX_ZIP_MB} MB.")
    try:
        with zipfile.ZipFile(zip_path) as z:
            files = _members(z)
            unpacked = sum(info.file_size for info in files.values()) / 2**20
            if unpacked > MAX_UNPACKED_MB:
                raise AdapterZipError(f"The zip unpacks to {unpacked:.0f} MB; the playground takes up to {MAX_UNPACKED_MB} MB.")
            out.mkdir(parents=True)
            for name, info in files.items():
                with z.open(info) as src, open(out / name, "wb") as dst:
                    dst.write(src.read(MAX_UNPACKED_MB * 2**20 + 1))  # a size field that lies cannot write more
    except zipfile.BadZipFile:
        raise AdapterZipError("The file is not a zip archive: upload the zip that the page's Download made.") from None
    return out
