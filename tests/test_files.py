"""Directories written whole or not at all (ipa.files): adapters, checkpoints and the embedded-model cache
survive a process killed at any step of a save, and processes preparing the cache at once build it once."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

from ipa.files import atomic_directory, recover_directory
from ipa.models import EMBEDDED_CACHE_VERSION
from ipa.policy_adapter import AdapterCard, read_card
from ipa.training.config import find_checkpoint, load_checkpoint, save_checkpoint
from tests.helpers import REPO, perturb_lora


class Killed(BaseException):
    """The process died here (a BaseException, like SystemExit: no `except Exception` handles it)."""


@contextlib.contextmanager
def killed_at(monkeypatch, step: int):
    """Run the block with the process 'killed' at its step-th file-system move (os.rename or shutil.rmtree): that call
    raises Killed, and from then on no move runs (a killed process cleans nothing up). Yields a list that holds True
    when the kill happened (False: the block finished first)."""
    count, dead, happened = 0, False, [False]

    def mortal(real):
        def call(*args, **kwargs):
            nonlocal count, dead
            if dead:
                return None
            count += 1
            if count == step:
                dead = happened[0] = True
                raise Killed
            return real(*args, **kwargs)
        return call

    with monkeypatch.context() as patch:
        patch.setattr(os, "rename", mortal(os.rename))
        patch.setattr(shutil, "rmtree", mortal(shutil.rmtree))
        try:
            yield happened
        except Killed:
            pass


def visible(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def test_an_error_while_writing_leaves_the_previous_directory_and_no_temporary_folder(tmp_path):
    target = tmp_path / "thing"
    with atomic_directory(target) as tmp:
        (tmp / "v").write_text("1")
    with pytest.raises(RuntimeError), atomic_directory(target) as tmp:
        (tmp / "v").write_text("2")
        raise RuntimeError("disk full")
    assert (target / "v").read_text() == "1" and os.listdir(tmp_path) == ["thing"]


def test_an_adapter_save_killed_at_any_step_leaves_a_loadable_adapter(tiny_host, tmp_path, monkeypatch):
    target = tmp_path / "steer"
    tiny_host.new_adapter("steer", AdapterCard(task="toxicity", steps=1))
    tiny_host.save_adapter("steer", target)
    seen = set()
    for step in itertools.count(1):
        tiny_host.cards["steer"].steps = 2
        perturb_lora(tiny_host, "steer", scale=0.01, seed=step)
        with killed_at(monkeypatch, step) as killed:
            tiny_host.save_adapter("steer", target)
        card = read_card(target)  # recovers the previous adapter when the kill fell between the renames
        assert card.steps in (1, 2) and visible(tmp_path) == ["steer"]
        tiny_host.load_adapter("check", target)
        tiny_host.delete_adapter("check")
        seen.add(card.steps)
        if not killed[0]:
            break
        tiny_host.cards["steer"].steps = 1
        tiny_host.save_adapter("steer", target)  # the next save after a kill works, and starts from version 1 again
    assert step >= 4 and seen == {1, 2}  # kills before the swap keep the old adapter, after it the new one


def test_a_checkpoint_save_killed_at_any_step_leaves_a_checkpoint_to_resume_from(tiny_host, tmp_path, monkeypatch):
    tiny_host.new_adapter("run", AdapterCard(task="toxicity"))
    tiny_host.set_trainable("run", True)
    optimizer = torch.optim.AdamW(tiny_host.trainable_parameters("run"), lr=1e-3)
    directory = tmp_path / "checkpoint"
    save_checkpoint(directory, tiny_host, "run", optimizer, {"step": 1})
    steps = set()
    for step in itertools.count(1):
        with killed_at(monkeypatch, step) as killed:
            save_checkpoint(directory, tiny_host, "run", optimizer, {"step": 2})
        found = find_checkpoint(tmp_path)
        state, _ = load_checkpoint(found, tiny_host, "run", optimizer)
        steps.add(state["step"])
        if not killed[0]:
            break
        save_checkpoint(directory, tiny_host, "run", optimizer, {"step": 1})
    assert step >= 6 and steps == {1, 2} and visible(tmp_path) == ["checkpoint"]


def test_recovery_only_acts_when_the_target_is_missing(tmp_path):
    target, old = tmp_path / "a", tmp_path / ".a.old"
    old.mkdir()
    (old / "v").write_text("old")
    assert (recover_directory(target) / "v").read_text() == "old" and not old.exists()
    old.mkdir()
    assert recover_directory(target) == target and old.exists()  # a new one is there: the old one is left for the next save


BUILD_TOGETHER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from ipa import models

    def fake_writer(directory):  # stands in for the 20-second de-quantisation
        with open(os.environ["BUILD_LOG"], "a") as log:
            log.write(f"{os.getpid()}\\n")
        time.sleep(2.0)
        (directory / "config.json").write_text("{}")

    models._write_embedded_model = fake_writer
    ready = Path(os.environ["IPA_CACHE_DIR"]) / f"ready-{sys.argv[1]}"
    ready.touch()
    while len(list(ready.parent.glob("ready-*"))) < 2:  # both processes prepare at the same moment
        time.sleep(0.05)
    print(models.embedded_model_dir())
""")


@pytest.mark.slow  # two processes
def test_two_processes_preparing_the_embedded_model_at_once_build_it_once(tmp_path):
    cache = tmp_path / "cache"
    stale = cache / "models" / f".{EMBEDDED_CACHE_VERSION}.tmp99999999"  # left by a killed build
    stale.mkdir(parents=True)
    env = dict(os.environ, IPA_CACHE_DIR=str(cache), BUILD_LOG=str(tmp_path / "builds.log"), PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    processes = [subprocess.Popen([sys.executable, "-c", BUILD_TOGETHER, str(i)], env=env, cwd=REPO, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(2)]
    results = [p.communicate(timeout=300) + (p.returncode,) for p in processes]
    target = cache / "models" / EMBEDDED_CACHE_VERSION
    for out, err, code in results:
        assert code == 0, err
        assert out.strip() == str(target)
    assert len((tmp_path / "builds.log").read_text().split()) == 1  # built once; the other process waited, then used it
    assert json.loads((target / "config.json").read_text()) == {}
    assert sorted(p.name for p in (cache / "models").iterdir()) == [f".{EMBEDDED_CACHE_VERSION}.lock", EMBEDDED_CACHE_VERSION]
