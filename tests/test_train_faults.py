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
import time

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import REPO, save_tiny_model

pytestmark = pytest.mark.slow
KILLS = 10


@pytest.fixture(scope="module")
def tiny_dir(tokenizer, tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny", tokenizer)


def command(tiny_dir: str, out, resume: bool) -> list[str]:
    return [sys.executable, "-m", "adapters.train", "--task", "toxicity", "--base", tiny_dir, "--out", str(out),
            "--steps", "8", "--batch-size", "4", "--group-size", "2", "--micro-batch-size", "2", "--max-new-tokens", "4",
            "--eval-prompts", "2", "--eval-samples", "1", "--eval-every", "3", "--samples-every", "1",
            "--checkpoint-every", "3", "--device", "cpu", "--dtype", "float32", "--lr", "1e-2", "--seed", "0",
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


def test_sigkill_at_random_moments_loses_nothing(tiny_dir, tmp_path):
    reference = tmp_path / "reference"
    started = time.monotonic()
    done = subprocess.run(command(tiny_dir, reference, False), cwd=REPO, env=environment(), capture_output=True,
                          text=True, timeout=600)
    duration = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-2000:]

    out = tmp_path / "killed"
    rng = random.Random(0)
    resumed_from = []
    for kill in range(KILLS + 1):
        before = checkpoint_step(out)
        log = (tmp_path / f"stderr-{kill}.txt").open("w")
        process = subprocess.Popen(command(tiny_dir, out, before is not None), cwd=REPO, env=environment(),
                                   stdout=subprocess.DEVNULL, stderr=log, text=True)
        try:
            process.wait(timeout=None if kill == KILLS else rng.uniform(0.5, duration))
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait()
        log.close()
        said = re.findall(r"from its checkpoint at step (\d+)", (tmp_path / f"stderr-{kill}.txt").read_text())
        if before is not None and said:  # it lived long enough to load the checkpoint: the last one
            assert int(said[0]) == before
            resumed_from.append(before)
        if kill == KILLS:
            assert process.returncode == 0, (tmp_path / f"stderr-{kill}.txt").read_text()[-2000:]

    assert resumed_from, "no kill fell after the first checkpoint"
    a = load_file(reference / "adapter" / "adapter_model.safetensors")
    b = load_file(out / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ref_steps, got_steps = records(reference / "metrics.jsonl"), records(out / "metrics.jsonl")
    assert [m["step"] for m in got_steps] == list(range(1, 9))
    assert [m["reward"] for m in got_steps] == [m["reward"] for m in ref_steps]
    assert [s["step"] for s in records(out / "samples.jsonl")] == list(range(1, 9))
    evals = records(out / "evals.jsonl")
    assert [(e["label"], e["step"]) for e in evals] == [("before", 0), ("during", 3), ("during", 6), ("after", 8)]
    assert evals[-1]["mean_reward"] == records(reference / "evals.jsonl")[-1]["mean_reward"]
