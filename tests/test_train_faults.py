"""A training run killed with SIGKILL at random moments resumes from its last checkpoint each time, and ends with
the adapter an uninterrupted run makes (issue 12). A CPU test of a few minutes: many processes start."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import REPO, save_tiny_model

pytestmark = pytest.mark.slow
KILLS = 10
STEPS = 20
"""Enough steps that ten kills cannot outrun the run: a kill after a checkpoint moves it on by 4 steps at most."""


@pytest.fixture(scope="module")
def tiny_dir(tokenizer, tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny", tokenizer)


def command(tiny_dir: str, out, resume: bool) -> list[str]:
    return [sys.executable, "-m", "ipa.training.loop", "--task", "toxicity", "--base", tiny_dir, "--out", str(out),
            "--steps", str(STEPS), "--batch-size", "4", "--group-size", "2", "--micro-batch-size", "2", "--max-new-tokens", "4",
            "--eval-prompts", "2", "--eval-samples", "1", "--eval-every", "5", "--samples-every", "1",
            "--checkpoint-every", "4", "--device", "cpu", "--dtype", "float32", "--lr", "1e-2", "--seed", "0",
            *(["--resume"] if resume else [])]


def environment() -> dict:
    return dict(os.environ, PYTHONPATH=REPO, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")


def checkpoint_step(out) -> int | None:
    for name in ("checkpoint", "checkpoint.old"):
        state = out / name / "state.json"
        if state.is_file():
            return json.loads(state.read_text())["step"]
    return None


def records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def step_seconds(out) -> float:
    """How long one training step took in a run (its own log): the scale of the kills' random delays."""
    return max(m["sample_s"] + m["score_s"] + m["update_s"] for m in records(out / "metrics.jsonl"))


class Events:
    """What a training process has done so far: its JSON events (--json-events) read from stdout as they come."""

    def __init__(self, process: subprocess.Popen):
        self.seen: list[dict] = []
        self.reader = threading.Thread(target=self._read, args=(process.stdout,), daemon=True)
        self.reader.start()

    def _read(self, stdout) -> None:
        for line in stdout:
            if line.startswith("{"):
                self.seen.append(json.loads(line))

    def reached(self, event: str) -> bool:
        types = [e["type"] for e in self.seen]
        if event == "started":  # its first event: the first evaluation of a new run, the first step of a resumed one
            return bool(types)
        if event.startswith("step"):  # it finished its n-th step
            return types.count("step") >= int(event[4:])
        if event == "checkpoint":  # it wrote a checkpoint
            return "checkpoint" in types
        raise ValueError(event)


def kill_plan(rng: random.Random, step_s: float) -> list[tuple[str, float]]:
    """Where each kill falls: just after an event of the process (started, its first or second step done, a
    checkpoint written), plus a random delay of up to one step's time, so that it lands anywhere inside the next
    piece of work (a decoding step, an update, an evaluation, a checkpoint being written). The first kill falls
    after the first checkpoint, so that the next start has one to resume from."""
    events = ["started", "step1", "step2", "checkpoint"]
    return [("checkpoint", rng.uniform(0, step_s))] + [(rng.choice(events), rng.uniform(0, step_s))
                                                        for _ in range(KILLS - 1)]


def test_sigkill_at_random_moments_loses_nothing(tiny_dir, tmp_path):
    """Kills fall at moments chosen from what the process has done (its events, then a random fraction of a step),
    not from wall-clock guesses, so they fall in the same places on a fast or a slow machine, quiet or loaded."""
    reference = tmp_path / "reference"
    done = subprocess.run(command(tiny_dir, reference, False), cwd=REPO, env=environment(), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]

    out = tmp_path / "killed"
    plan = kill_plan(random.Random(0), step_seconds(reference))
    resumed_from, killed_after = [], []
    for kill in range(KILLS + 1):
        before = checkpoint_step(out)
        stderr_path = tmp_path / f"stderr-{kill}.txt"
        with stderr_path.open("w") as log:
            process = subprocess.Popen(command(tiny_dir, out, before is not None) + ["--json-events"], cwd=REPO,
                                       env=environment(), stdout=subprocess.PIPE, stderr=log, text=True)
            events = Events(process)
            if kill < KILLS:
                event, delay = plan[kill]
                while process.poll() is None and not events.reached(event):
                    time.sleep(0.002)
                time.sleep(delay)
                if process.poll() is None:
                    process.send_signal(signal.SIGKILL)
                    killed_after.append(event)
            process.wait(timeout=600)
            events.reader.join(60)
        said = re.findall(r"from its checkpoint at step (\d+)", stderr_path.read_text())
        if before is not None and said:  # it lived long enough to load the checkpoint: the last one
            assert int(said[0]) == before
            resumed_from.append(before)
        if kill == KILLS:
            assert process.returncode == 0, stderr_path.read_text()[-2000:]
            assert events.seen[-1]["type"] == "done" and events.seen[-1]["step"] == STEPS

    assert len(killed_after) >= KILLS // 2, killed_after  # most kills fell while the run was still working
    assert resumed_from, "no start resumed from a checkpoint"
    a = load_file(reference / "adapter" / "adapter_model.safetensors")
    b = load_file(out / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ref_steps, got_steps = records(reference / "metrics.jsonl"), records(out / "metrics.jsonl")
    assert [m["step"] for m in got_steps] == list(range(1, STEPS + 1))
    assert [m["reward"] for m in got_steps] == [m["reward"] for m in ref_steps]
    assert [s["step"] for s in records(out / "samples.jsonl")] == list(range(1, STEPS + 1))
    evals = records(out / "evals.jsonl")
    assert [(e["label"], e["step"]) for e in evals] == [("before", 0), ("during", 5), ("during", 10), ("during", 15), ("after", STEPS)]
    assert evals[-1]["mean_reward"] == records(reference / "evals.jsonl")[-1]["mean_reward"]
