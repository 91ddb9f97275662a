"""The `ipa` command, as installed into the project's environment (pyproject.toml's script; make installs it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ipa.commands.main import COMMANDS, main

IPA = Path(sys.executable).parent / "ipa"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(IPA), *args], capture_output=True, text=True, timeout=300, cwd="/")


@pytest.mark.slow  # a process of its own, importing torch for the subcommand's help
def test_the_installed_command_lists_its_subcommands_and_runs_one():
    assert IPA.is_file(), "the ipa command is not installed: make installs it (pip install -e . --no-deps)"
    listed = run("--help")
    assert listed.returncode == 0
    for name in ("generate", "train", "evaluate", "compare", "serve", "bench"):
        assert f"  {name} " in listed.stdout
    train = run("train", "--help")  # from another folder: the package is installed, not just on the path
    assert train.returncode == 0 and train.stdout.startswith("usage: ipa train") and "--task" in train.stdout


def test_an_unknown_subcommand_says_so_and_lists_the_real_ones(capsys):
    assert main(["sparkle"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'sparkle'" in err and "generate" in err and "train" in err
    assert main(["bench"]) == 2 and "ipa bench NAME" in capsys.readouterr().err


def test_every_subcommand_names_a_module_with_a_main():
    import importlib

    for name, (module, _) in COMMANDS.items():
        if name != "bench":
            assert callable(importlib.import_module(module).main), name
