"""ZeroGPU as it really runs: every piece of GPU work of the page (generation, several users at once, branching, the
research panels, page training) goes through `spaces.GPU` calls, here those of a faithful fake (tests/fake_spaces:
each call a forked process, arguments and yields pickled), and the page's process never runs the model. What the
calls decode is what the page decodes without ZeroGPU, token for token."""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ipa.policy_adapter import AdapterCard
from app import research
from app.config import AppConfig, ModelsConfig
from app.service import Playground
from app.settings import Settings
from app.training_jobs import GpuChunks, ZeroGpuTrain, config_from_fields
from ipa.tasks import get_task
from ipa.tasks.scoring import RewardKit, TaskScorer
from tests.helpers import PROMPTS, perturb_lora, tiny_config
from tests.test_research import StandInModels

FAKE_SPACES = Path(__file__).parent / "fake_spaces" / "spaces" / "__init__.py"
INPUTS = [{"text": p} for p in PROMPTS]


@pytest.fixture
def spaces(monkeypatch):
    """The fake `spaces` package, imported as the app imports the real one."""
    spec = importlib.util.spec_from_file_location("spaces", FAKE_SPACES)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setitem(sys.modules, "spaces", module)
    return module


def make_service(host, tmp_path, zero_gpu: bool) -> Playground:
    kit = RewardKit()
    kit.__dict__.update(fluency=StandInModels(), relevance=StandInModels(), toxicity=StandInModels())
    config = AppConfig(adapters_dir=str(tmp_path / "shipped"), runs_dir=str(tmp_path / f"runs-{zero_gpu}"),
                       models=ModelsConfig(device="cpu"), warm_up=False, research_samples=40)
    return Playground(config, host, host, {"sentiment": TaskScorer(get_task("sentiment"), kit)}, torch.device("cpu"),
                      zero_gpu=zero_gpu)


@pytest.fixture
def services(tiny_host, tmp_path, spaces):
    """(the page without ZeroGPU, the page on ZeroGPU) on the same model and adapter; `main_forwards` records each
    forward pass the page's own process makes (a forward in a GPU call's process is recorded there, not here)."""
    tiny_host.new_adapter("made", AdapterCard(task="sentiment", algorithm="pg", steps=3, alpha=1.0))
    perturb_lora(tiny_host, "made")
    tiny_host.save_adapter("made", tmp_path / "shipped" / "sentiment")
    tiny_host.delete_adapter("made")
    plain, zero = make_service(tiny_host, tmp_path, False), make_service(tiny_host, tmp_path, True)
    plain.load_known_adapters()
    zero.store.adapters = plain.store.adapters  # one model carries the adapter for both pages
    main_forwards = []
    first_layer = tiny_host.base_model.model.layers[0]
    hook = first_layer.register_forward_pre_hook(lambda module, args: main_forwards.append(os.getpid()))
    yield plain, zero, main_forwards
    hook.remove()
    plain.close()
    zero.close()


def settings(**overrides) -> Settings:
    return Settings(**{"max_new_tokens": 6, "stop_at_eos": False, "seed": 0, "n": 2, **overrides})


def last(updates):
    *_, final = updates
    return final


def texts(generation) -> list[str]:
    return [c.text for c in generation.base + generation.tailored]


def test_generation_runs_in_gpu_calls_and_gives_the_page_s_own_texts(services, spaces):
    plain, zero, main_forwards = services
    expected = last(plain.generate("sentiment", INPUTS[0], settings(), "sentiment"))
    assert main_forwards  # without ZeroGPU the page's process runs the model: the hook sees it
    main_forwards.clear()
    calls = spaces.CALLS["n"]
    got = last(zero.generate("sentiment", INPUTS[0], settings(), "sentiment"))
    assert spaces.CALLS["n"] == calls + 1
    assert main_forwards == []  # the page's process never ran the model
    assert texts(got) == texts(expected) and got.done
    assert [c.token_ids for c in got.tailored] == [c.token_ids for c in expected.tailored]
    assert got.tailored_scores == expected.tailored_scores
    torch.testing.assert_close(torch.tensor(got.tailored[0].tailored_logprobs),
                               torch.tensor(expected.tailored[0].tailored_logprobs))


def test_it_streams_from_inside_the_call(services):
    _, zero, main_forwards = services
    updates = list(zero.generate("sentiment", INPUTS[0], settings(max_new_tokens=12, n=1), "sentiment"))
    lengths = [len(u.tailored[0].token_ids) for u in updates if u.tailored]
    # Text arrived before the call ended (users read at their own pace, so steps may come several at once).
    assert min(lengths) < 12 and lengths[-1] == 12
    assert main_forwards == []


def test_users_at_once_are_batched_into_calls_and_each_gets_what_it_gets_alone(services, spaces):
    plain, zero, main_forwards = services
    asks = [(INPUTS[i % 3], settings(seed=i, n=1 + i % 2)) for i in range(6)]
    expected = [texts(last(plain.generate("sentiment", inputs, s, "sentiment"))) for inputs, s in asks]
    main_forwards.clear()
    calls, got = spaces.CALLS["n"], {}

    def user(i):
        got[i] = texts(last(zero.generate("sentiment", asks[i][0], asks[i][1], "sentiment")))

    threads = [threading.Thread(target=user, args=(i,)) for i in range(len(asks))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert [got[i] for i in range(len(asks))] == expected
    assert spaces.CALLS["n"] - calls < len(asks)  # requests that waited together shared a call
    assert main_forwards == []


def test_branching_and_the_research_panels_run_in_gpu_calls(services, spaces):
    plain, zero, main_forwards = services
    generated = {s: last(s.generate("sentiment", INPUTS[0], settings(), "sentiment", inspect=True)) for s in (plain, zero)}
    assert generated[zero].tailored[0].steps == generated[plain].tailored[0].steps  # the inspector's data crossed too
    replayed = {s: s.base_steps(generated[s], 1) for s in (plain, zero)}  # a base sample's adapter view: replayed
    assert replayed[zero] == replayed[plain] and replayed[zero][0].adapters["sentiment"]
    token = generated[plain].tailored[0].steps[2].tailored[1].token_id
    branched = {s: s.branch(generated[s], "tailored", 1, 2, token) for s in (plain, zero)}
    assert branched[zero].texts == branched[plain].texts
    compared = {s: research.compare(s, "sentiment", INPUTS, 1, "sentiment", settings()) for s in (plain, zero)}
    assert compared[zero]["texts"] == compared[plain]["texts"]
    swept = {s: research.sweep(s, "sentiment", INPUTS, 1, "sentiment", settings(), "0,1") for s in (plain, zero)}
    assert [p["mean_reward"] for p in swept[zero]["alpha_sweep"]] == [p["mean_reward"] for p in swept[plain]["alpha_sweep"]]
    main_forwards.clear()
    calls = spaces.CALLS["n"]
    zero.branch(generated[zero], "tailored", 1, 2, token)
    zero.base_steps(generated[zero], 1)
    research.compare(zero, "sentiment", INPUTS[:1], 1, "sentiment", settings())
    assert spaces.CALLS["n"] > calls and main_forwards == []


def test_a_failed_call_fails_its_requests_with_the_reason_and_the_next_call_serves(services, monkeypatch):
    _, zero, _ = services
    original = zero.scheduler.gpu_call

    def broken(specs):
        raise RuntimeError("GPU task aborted")
        yield  # noqa: unreachable - a generator, as the real one is

    zero.scheduler.gpu_call = broken
    with pytest.raises(RuntimeError, match="GPU task aborted"):
        last(zero.generate("sentiment", INPUTS[0], settings(), "sentiment"))
    zero.scheduler.gpu_call = original
    assert last(zero.generate("sentiment", INPUTS[0], settings(), "sentiment")).done


def test_page_training_trains_in_forked_gpu_calls_and_makes_the_unchunked_adapter(tiny_dir, tmp_path, spaces):
    from ipa.training.loop import train

    config = lambda out: tiny_config(tiny_dir, out, steps=4, checkpoint_every=0)  # noqa: E731 - as the page's runs
    assert config_from_fields(asdict(config(tmp_path / "x"))) == config(tmp_path / "x")
    whole = train(config(tmp_path / "whole"), progress=False)
    calls, events = spaces.CALLS["n"], []
    chunked = ZeroGpuTrain(GpuChunks(steps=2, duration=120), gpu=spaces.GPU)(config(tmp_path / "chunked"), events.append,
                                                                              threading.Event())
    assert spaces.CALLS["n"] - calls == 2  # steps 1-2, then 3-4 and the final evaluation, each in its own process
    assert [e["step"] for e in events if e["type"] == "step"] == [1, 2, 3, 4]
    a, b = (load_file(Path(d) / "adapter_model.safetensors") for d in (whole, chunked))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_call_s_arguments_must_cross_pickled(spaces):
    """The fake is faithful where it matters: what does not pickle does not cross (a lock, a model's thread ...)."""
    @spaces.GPU(duration=10)
    def identity(x):
        return x

    assert identity({"a": [1, 2]}) == {"a": [1, 2]}
    with pytest.raises(TypeError):
        identity(threading.Lock())


def test_on_zero_gpu_the_page_s_process_keeps_the_models_on_the_cpu(spaces, monkeypatch):
    from app import spaces_compat

    assert spaces_compat.zero_gpu_on()
    config = AppConfig(models=ModelsConfig(device="cuda"), warm_up=False)
    loaded = {}

    def fake_load_host(name, device, dtype):
        loaded[name] = torch.device(device)
        raise RuntimeError("stop here")

    monkeypatch.setattr("app.service.load_host", fake_load_host)
    with pytest.raises(RuntimeError, match="stop here"):
        Playground.load(config)
    assert loaded == {"embedded": torch.device("cpu")}
