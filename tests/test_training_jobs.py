"""Training in a shared playground (app/training_jobs.py): the queue, Stop, the disk budget, limits and access.

The training loop is a fake here (it steps every 20 ms until its budget or Stop), so these run in about a second;
tests/test_app_api.py trains for real through the page's API. A ZeroGPU Space's runs in chunks of GPU calls train a
tiny model for real, with the `spaces` package faked."""

from __future__ import annotations

import json
import pickle
import shutil
import sys
import threading
import time
import types
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from ipa.policy_adapter import AdapterCard
from app.config import AppConfig, ConfigError
from app.adapter_store import AdapterStore
from app.config import ServiceError
from app.service import USER_ERRORS
from app.training_jobs import (FULL_LIMITS, SHARED_LIMITS, GpuChunks, TrainingJob, TrainingQueue, TrainingRequestError, TrainRequest,
                               ZeroGpuTrain, config_from_fields, training_limits)
from app.training_service import TrainingService
from app.widgets import local_browser as _local_browser
from tests.helpers import tiny_config


class FakeTrain:
    """Steps every 20 ms once `go` is set, until the step budget or Stop; writes an adapter of `adapter_mb` and a
    checkpoint, as ipa.training.loop does."""

    def __init__(self, adapter_mb: float = 0.1):
        self.go = threading.Event()
        self.adapter_mb = adapter_mb

    def __call__(self, config, on_event, stop, progress):
        step = 0
        while not stop.is_set() and not self.go.wait(0.01):
            pass
        while step < config.run.steps and not stop.wait(0.02):
            step += 1
            on_event({"type": "step", "step": step, "reward": 0.5, "kl": 0.01, "elapsed": 0.02 * step})
        run = Path(config.run.out)
        if step == 0:  # as ipa.training.loop: nothing learned, no adapter
            on_event({"type": "done", "interrupted": True, "adapter": None})
            return None
        (run / "checkpoint").mkdir(parents=True, exist_ok=True)
        (run / "checkpoint" / "optimizer.safetensors").write_bytes(b"0" * 300_000)
        (run / "adapter").mkdir()
        (run / "adapter" / "card.json").write_text(json.dumps(asdict(AdapterCard(task=config.run.task, steps=step))))
        (run / "adapter" / "adapter_model.safetensors").write_bytes(b"0" * int(self.adapter_mb * 1e6))
        on_event({"type": "done", "interrupted": stop.is_set(), "adapter": str(run / "adapter")})
        return run / "adapter"


def make_queue(tmp_path, train, disk_mb=1000.0, max_waiting=8):
    finished, removed = [], []
    queue = TrainingQueue(train, lambda job, directory: finished.append(job.name), removed.append, USER_ERRORS,
                          tmp_path / "runs", disk_mb, max_waiting)
    (tmp_path / "runs").mkdir()
    return queue, finished, removed


def job(tmp_path, name, owner, steps=3):
    request = TrainRequest(budget="steps", amount=steps, batch_size=4, group_size=2)
    return TrainingJob(name=name, request=request, owner=owner,
                       config=request.to_config(out=str(tmp_path / "runs" / name), name=name, device="cpu"))


def wait_until(condition, timeout=10.0):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.01)


def test_runs_wait_in_order_with_their_position_and_one_a_session(tmp_path):
    train = FakeTrain()
    queue, finished, _ = make_queue(tmp_path, train)
    first = queue.submit(job(tmp_path, "a", "alice"))
    wait_until(lambda: queue.current() is not None)
    second, third = queue.submit(job(tmp_path, "b", "bob")), queue.submit(job(tmp_path, "c", "carol"))
    assert (second["state"], second["position"], third["position"]) == ("queued", 1, 2)
    assert third["phase"] == "Waiting: 2 runs ahead of this one" and queue.status("carol")["queued"] == 2
    with pytest.raises(TrainingRequestError, match="still waiting"):
        queue.submit(job(tmp_path, "b2", "bob"))
    with pytest.raises(TrainingRequestError, match="No training run is in progress for this session"):
        queue.stop("mallory")
    assert queue.stop("bob")["state"] == "cancelled"  # a waiting run leaves the queue at once
    assert queue.status("carol")["position"] == 1
    train.go.set()
    wait_until(lambda: len(finished) == 2)
    assert finished == ["a", "c"] and queue.status("alice")["state"] == "done" and first["adapter"] == "a"
    queue.close()


def test_a_full_queue_says_so(tmp_path):
    queue, *_ = make_queue(tmp_path, FakeTrain(), max_waiting=1)
    queue.submit(job(tmp_path, "a", "alice"))
    wait_until(lambda: queue.current() is not None)
    queue.submit(job(tmp_path, "b", "bob"))
    with pytest.raises(TrainingRequestError, match="1 training runs are already waiting"):
        queue.submit(job(tmp_path, "c", "carol"))
    queue.close()


def test_stop_takes_effect_within_seconds_and_keeps_what_was_learned(tmp_path):
    train = FakeTrain()
    train.go.set()
    queue, finished, _ = make_queue(tmp_path, train)
    queue.submit(job(tmp_path, "a", "alice", steps=2000))
    wait_until(lambda: queue.status("alice")["step"] >= 2)
    asked = time.time()
    assert queue.stop("alice")["phase"].startswith("Stopping")
    wait_until(lambda: queue.status("alice")["state"] == "done", timeout=5)
    status = queue.status("alice")
    assert time.time() - asked < 2 and status["interrupted"] and finished == ["a"]
    assert not (tmp_path / "runs" / "a" / "checkpoint").exists()  # page runs are not resumed
    queue.close()


def test_a_run_stopped_before_its_first_step_leaves_no_adapter(tmp_path):
    queue, finished, _ = make_queue(tmp_path, FakeTrain())  # never told to go: no step is taken
    queue.submit(job(tmp_path, "a", "alice"))
    wait_until(lambda: queue.current() is not None)
    queue.stop("alice")
    wait_until(lambda: queue.status("alice")["state"] == "done")
    assert finished == [] and not (tmp_path / "runs" / "a").exists()
    assert queue.status("alice")["phase"] == "Stopped before the first step: no adapter was made"
    queue.close()


def test_the_oldest_page_runs_go_when_runs_outgrow_the_disk_budget(tmp_path):
    train = FakeTrain(adapter_mb=0.4)
    train.go.set()
    shipped = tmp_path / "shipped" / "toxicity"
    shipped.mkdir(parents=True)
    (shipped / "adapter_model.safetensors").write_bytes(b"0" * 2_000_000)
    queue, finished, removed = make_queue(tmp_path, train, disk_mb=1.0)
    for name, owner in (("a", "alice"), ("b", "bob"), ("c", "carol")):
        queue.submit(job(tmp_path, name, owner, steps=1))
        wait_until(lambda: queue.status(owner)["state"] == "done")
        time.sleep(0.02)  # distinct folder times
    wait_until(lambda: removed == ["a"])
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["b", "c"] and finished == ["a", "b", "c"]
    assert (shipped / "adapter_model.safetensors").is_file()
    queue.close()


def test_shared_playgrounds_get_the_conservative_limits():
    assert training_limits("auto", shared=False) is FULL_LIMITS and training_limits("auto", shared=True) is SHARED_LIMITS
    assert training_limits("full", shared=True) is FULL_LIMITS
    assert AppConfig(share=True).shared and AppConfig(host="0.0.0.0").shared and not AppConfig().shared
    biggest = TrainRequest(budget="minutes", amount=30, batch_size=256, max_new_tokens=64, eval_prompts=64)
    biggest.check(FULL_LIMITS)
    with pytest.raises(TrainingRequestError, match="The budget in minutes must be a number from 0.05 to 5, got 30"):
        biggest.check(SHARED_LIMITS)
    with pytest.raises(ConfigError, match="--training must be one of open, local, off"):
        AppConfig(training="everyone")
    with pytest.raises(ConfigError, match="must differ"):
        AppConfig(runs_dir="adapters/trained", adapters_dir="adapters/trained")


def browser(client: str, host: str, **headers) -> SimpleNamespace:
    return SimpleNamespace(client=SimpleNamespace(host=client), headers={"host": host, **headers})


def test_local_training_only_for_browsers_on_this_machine():
    assert _local_browser(browser("127.0.0.1", "127.0.0.1:7860")) and _local_browser(browser("::1", "[::1]:7860"))
    assert not _local_browser(browser("10.0.0.7", "10.0.0.2:7860"))
    assert not _local_browser(browser("127.0.0.1", "abcd.gradio.live"))  # a share link's tunnel connects locally
    assert not _local_browser(browser("127.0.0.1", "127.0.0.1:7860", **{"x-forwarded-for": "203.0.113.9"}))
    assert not _local_browser(None)
    for access, local, message in (("local", False, "only a browser on the machine"), ("off", True, "switched off")):
        config = AppConfig(training=access)
        training = TrainingService(config, AdapterStore(config, None, threading.Lock()), "cpu")
        with pytest.raises(ServiceError, match=message):
            training.start(TrainRequest(), owner="x", local=local)


# --- on a ZeroGPU Space: a run in chunks of GPU calls ----------------------------------------------------------


class FakeSpaces(types.ModuleType):
    """Hugging Face's `spaces` package as a ZeroGPU Space has it, faked: `GPU(duration=...)` runs the function in this
    process, but as the real one does it pickles the arguments and each yielded value, and it records each call's
    duration, wall time and the training steps made inside it. The call numbered `kill` is killed at its time limit
    after its steps, before its last checkpoint: the run's checkpoint is put back as it was and the call fails."""

    def __init__(self, kill: int | None = None):
        super().__init__("spaces")
        self.config = SimpleNamespace(Config=SimpleNamespace(zero_gpu=True))
        self.calls: list[dict] = []
        self.kill = kill

    def GPU(self, duration: int = 60):  # noqa: N802 - the real package's name
        def decorate(fn):
            def call(*args, **kwargs):  # generator functions only: train_chunk is one
                args, kwargs = pickle.loads(pickle.dumps((args, kwargs)))  # as the call crosses to the GPU process
                record = {"duration": duration, "steps": [], "pause_at": args[1], "stopping": args[2]}
                self.calls.append(record)
                checkpoint = Path(args[0]["run"]["out"]) / "checkpoint"
                saved = checkpoint.with_name("checkpoint-before-call")
                if checkpoint.is_dir() and len(self.calls) == self.kill:
                    shutil.copytree(checkpoint, saved)
                started = time.monotonic()
                for event in fn(*args, **kwargs):
                    if event["type"] == "step":
                        record["steps"].append(event["step"])
                    yield pickle.loads(pickle.dumps(event))
                record["seconds"] = time.monotonic() - started
                if len(self.calls) == self.kill:
                    shutil.rmtree(checkpoint)
                    saved.rename(checkpoint)
                    raise RuntimeError("GPU task aborted")
            return call
        return decorate


def adapter_tensors(adapter_dir) -> dict:
    return load_file(Path(adapter_dir) / "adapter_model.safetensors")


def test_on_zero_gpu_a_run_trains_in_chunks_of_gpu_calls_and_makes_the_unchunked_adapter(tiny_dir, tmp_path, monkeypatch):
    from ipa.training.loop import train
    from app import spaces_compat

    spaces = FakeSpaces(kill=2)
    monkeypatch.setitem(sys.modules, "spaces", spaces)
    assert spaces_compat.zero_gpu_on()
    config = lambda out: tiny_config(tiny_dir, out, steps=5, checkpoint_every=0)  # noqa: E731 - page runs checkpoint by time
    assert config_from_fields(asdict(config(tmp_path / "x"))) == config(tmp_path / "x")  # what crosses to the GPU process
    whole = train(config(tmp_path / "whole"), progress=False)

    events = []
    chunked = ZeroGpuTrain(GpuChunks(steps=2, duration=30))(config(tmp_path / "chunked"), events.append, threading.Event())

    # Chunks of 2 steps, each inside its own GPU call; the second is killed at its limit after its steps, so the run
    # goes on from step 2 with 1 step a call, and reports each step once.
    assert [c["steps"] for c in spaces.calls] == [[1, 2], [3, 4], [3], [4], [5]]
    assert [c["pause_at"] for c in spaces.calls] == [2, 4, 3, 4, 5] and not any(c["stopping"] for c in spaces.calls)
    assert all(c["duration"] == 30 and c["seconds"] < 30 for c in spaces.calls)
    assert [e["step"] for e in events if e["type"] == "step"] == [1, 2, 3, 4, 5]
    assert [e["label"] for e in events if e["type"] == "eval"] == ["before", "after"]
    assert [e["type"] for e in events].count("done") == 1
    a, b = adapter_tensors(whole), adapter_tensors(chunked)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # bit for bit


def test_on_zero_gpu_stop_ends_the_run_after_the_running_chunk_with_what_it_learned(tiny_dir, tmp_path, monkeypatch):
    spaces = FakeSpaces()
    monkeypatch.setitem(sys.modules, "spaces", spaces)
    stop, events = threading.Event(), []

    def on_event(event):
        events.append(event)
        if event["type"] == "step" and event["step"] == 3:
            stop.set()

    config = tiny_config(tiny_dir, tmp_path / "run", steps=20, checkpoint_every=0)
    adapter = ZeroGpuTrain(GpuChunks(steps=2, duration=30))(config, on_event, stop)
    # Stop reaches the run between calls: the chunk under way ends (step 4), one more call evaluates and saves.
    assert [(c["steps"], c["stopping"]) for c in spaces.calls] == [([1, 2], False), ([3, 4], False), ([], True)]
    done = events[-1]
    assert done["type"] == "done" and done["interrupted"] and done["step"] == 4 and Path(done["adapter"]) == adapter
    assert json.loads((adapter / "card.json").read_text())["steps"] == 4

    # Stopped before any step was checkpointed: nothing learned, no call at all.
    spaces.calls.clear()
    stop, events = threading.Event(), []
    stop.set()
    assert ZeroGpuTrain(GpuChunks(steps=2))(tiny_config(tiny_dir, tmp_path / "none"), events.append, stop) is None
    assert spaces.calls == [] and events == [{"type": "done", "adapter": None, "step": 0, "interrupted": True}]
