"""The page's research panels (app/research.py, app/research_ui.py): Compare methods and the alpha sweep.

On a tiny model with a steering adapter, served by a real Playground (its scheduler decodes) and scored by the
sentiment task's own scorer, whose model-based parts are stand-ins (fast); the API names on the real app (slow).
"""

from __future__ import annotations

import json
import threading
import time

import pytest
import torch

from ipa.policy_adapter import AdapterCard
from ipa.decoding.run import TailoredPolicy
from app import research, research_ui
from app.config import AppConfig, ModelsConfig
from app.config import ServiceError
from app.service import Playground
from app.settings import Settings
from ipa.evaluation.compare import METHODS, decode_method
from ipa.tasks import TASKS, TaskInputError, get_task
from ipa.tasks.scoring import RewardKit, TaskScorer
from tests.helpers import PROMPTS, perturb_lora

T = 5
"""Tokens a sample (no EOS stop: every sample has exactly T tokens)."""
INPUTS = [{"text": p} for p in PROMPTS]


class StandInModels:
    """The kit's model-based rewards, by hand: fluency 0.5, toxicity 0, relevance = shared words, perplexity 10."""

    backend = "profanity_check"

    def __call__(self, prompts, completions, **context):
        return [0.5] * len(completions)

    def toxicity(self, texts):
        return [0.0] * len(texts)

    def cosines(self, prompts, completions):
        return [len(set(p.split()) & set(c.split())) / 10 for p, c in zip(prompts, completions)]

    def perplexities(self, completions):
        return [10.0] * len(completions)


@pytest.fixture
def service(tiny_host, tmp_path):
    tiny_host.new_adapter("made", AdapterCard(task="sentiment", algorithm="pg", steps=3, alpha=1.0))
    perturb_lora(tiny_host, "made")
    tiny_host.save_adapter("made", tmp_path / "shipped" / "sentiment")
    tiny_host.delete_adapter("made")
    kit = RewardKit()
    kit.__dict__.update(fluency=StandInModels(), relevance=StandInModels(), toxicity=StandInModels())
    config = AppConfig(adapters_dir=str(tmp_path / "shipped"), runs_dir=str(tmp_path / "runs"), models=ModelsConfig(device="cpu"),
                       warm_up=False, research_samples=40)
    playground = Playground(config, tiny_host, tiny_host, {"sentiment": TaskScorer(get_task("sentiment"), kit)},
                            torch.device("cpu"))
    playground.load_known_adapters()
    yield playground
    playground.close()


def settings(**overrides) -> Settings:
    return Settings(**{"max_new_tokens": T, "stop_at_eos": False, "seed": 0, **overrides})


@pytest.fixture
def compared(service):
    return research.compare(service, "sentiment", INPUTS, 2, "sentiment", settings())


def test_compare_reports_every_method_in_bench_compare_json(compared):
    assert list(compared["methods"]) == list(METHODS) and list(compared["texts"]) == list(METHODS)
    assert (compared["task"], compared["n_prompts"], compared["samples_per_prompt"]) == ("sentiment", 3, 2)
    for name, values in compared["methods"].items():
        assert {"mean_reward", "mean_reward_ci95", "perplexity", "relevance", "distinct_2", "positivity", "positive_rate",
                "decode_rows", "seconds"} <= set(values), name
        assert len(compared["texts"][name]) == 2
    assert compared["methods"]["ipa"]["kl_per_token"] > 0 and compared["methods"]["base"]["kl_per_token"] == 0
    json.dumps(compared)  # the JSON download


def test_best_of_n_keeps_the_highest_reward_sample_and_compute_is_counted(service, compared):
    n = compared["best_of_n"]
    assert n == 2  # the adapter sits on the base: 2 rows a token against 1
    # The same draws decoded alone (no scheduler), scored by the service's scorer: the kept ones are each group's best.
    policy = TailoredPolicy(service.base)
    prompts = [TASKS["sentiment"].build_prompt(x, service.base.tokenizer) for x in INPUTS]
    drawn = [c.text for c in decode_method(policy, prompts, settings(), 2 * n, "base", len(prompts)).completions]
    rewards = [s["reward"] for s in service.scorers["sentiment"]([x for x in INPUTS for _ in range(2 * n)], drawn)]
    best = [max(range(g, g + n), key=lambda i: rewards[i]) for g in range(0, 2 * n, n)]  # the first prompt's 2 groups
    assert compared["texts"]["best_of_n"] == [drawn[i] for i in best]

    methods, P, k = compared["methods"], len(INPUTS), 2
    rows = {"base": 1, "ipa": 2, "best_of_n": 1, "prompted": 1, "prompted_ipa": 2, "adapter_alone": 2}
    samples = {name: P * k * (n if name == "best_of_n" else 1) for name in METHODS}
    for name in METHODS:
        assert methods[name]["rows_per_step"] == rows[name], name
        assert methods[name]["samples_decoded"] == samples[name], name
        assert methods[name]["decode_rows"] == rows[name] * samples[name] * T, name
    assert methods["best_of_n"]["decode_rows"] == methods["ipa"]["decode_rows"]


def test_sweep_gives_one_point_per_alpha_and_alpha_0_is_the_base(service, compared):
    swept = research.sweep(service, "sentiment", INPUTS, 2, "sentiment", settings(), "2, 0,0.5,1")
    points = swept["alpha_sweep"]
    assert [p["alpha"] for p in points] == [0.0, 0.5, 1.0, 2.0]
    assert [p["trained_strength"] for p in points] == [False, False, True, False]
    base = compared["methods"]["base"]
    assert points[0]["mean_reward"] == base["mean_reward"] and points[0]["kl_per_token"] == 0
    assert points[0]["perplexity"] == base["perplexity"] and points[3]["kl_per_token"] > points[2]["kl_per_token"] > 0
    for point in points:
        assert {"mean_reward_ci95", "kl_per_token_ci95", "perplexity_ci95", "relevance_ci95"} <= set(point)
    json.dumps(swept)


@pytest.mark.parametrize("alphas, message", [
    ("", "Give the alphas to sweep"),
    ("  ", "Give the alphas to sweep"),
    ("0,1,x", "The alpha sweep takes numbers separated by commas"),
    ("0,1,7", "alphas must be a number from 0 to 5, got 7"),
    ("0,-1", "alphas must be a number from 0 to 5, got -1"),
    (",".join(str(a / 10) for a in range(15)), "3 prompts × 1 sample × 15 alphas = 45 samples; this playground decodes at most 40"),
])
def test_bad_alphas_are_one_clear_message(service, alphas, message):
    with pytest.raises(ServiceError) as caught:
        research.sweep(service, "sentiment", INPUTS, 1, "sentiment", settings(), alphas)
    assert message in str(caught.value)


@pytest.mark.parametrize("change, message", [
    ({"k": 3}, "3 prompts × 3 samples × 6 methods = 54 samples; this playground decodes at most 40"),
    ({"k": 5}, "samples_per_prompt must be a whole number from 1 to 4, got 5"),
    ({"adapter": None}, "Compare methods needs an adapter"),
    ({"adapter": "nope"}, "There is no adapter named 'nope'"),
])
def test_compare_refuses_what_the_page_cannot_serve(service, change, message):
    asked = {"k": 1, "adapter": "sentiment", **change}
    with pytest.raises(ServiceError, match=message):
        research.compare(service, "sentiment", INPUTS, asked["k"], asked["adapter"], settings())


def test_the_inputs_are_the_tab_s_or_the_task_s_demos(service):
    assert research.research_inputs(service, "sentiment", "input", {"text": " The sea "}) == [{"text": "The sea"}]
    assert len(research.research_inputs(service, "commongen", "demos", {})) == len(TASKS["commongen"].demos)
    with pytest.raises(TaskInputError, match="the text to continue is missing"):
        research.research_inputs(service, "sentiment", "input", {"text": " "})
    with pytest.raises(ServiceError, match="prompts must be one of input, demos"):
        research.research_inputs(service, "sentiment", "all of them", {"text": "The sea"})


def test_progress_names_the_method_and_closing_the_page_stops_the_work(service):
    said = [m for m in research.in_background(
        lambda say, cancelled: research.compare(service, "sentiment", INPUTS[:1], 1, "sentiment", settings(), say, cancelled))]
    report, messages = said[-1], said[:-1]
    assert isinstance(report, dict) and report["n_prompts"] == 1
    assert any(m.startswith("ipa: 1 prompts × 1") for m in messages) and any("best_of_n" in m for m in messages)

    # A long run, left after its first message: its request leaves the scheduler and the worker stops.
    work_done = threading.Event()

    def work(say, cancelled):
        try:
            return research.compare(service, "sentiment", INPUTS, 1, "sentiment", settings(max_new_tokens=120), say, cancelled)
        finally:
            work_done.set()

    updates = research.in_background(work)
    next(updates)
    updates.close()
    assert work_done.wait(30)
    deadline = time.time() + 5
    while (service.scheduler.engine.running or service.scheduler.engine.waiting) and time.time() < deadline:
        time.sleep(0.05)
    assert not service.scheduler.engine.running and not service.scheduler.engine.waiting


def test_the_views_show_the_table_texts_and_curves(compared, service):
    table = research_ui.compare_frame(compared, TASKS["sentiment"])
    assert list(table["method"]) == list(METHODS)
    assert {"reward (± 95 %)", "positivity", "positive rate", "perplexity", "relevance", "distinct-2", "decode rows",
            "seconds", "N"} <= set(table.columns)
    assert table.loc[table["method"] == "best_of_n", "N"].item() == "2" and table.loc[0, "N"] == ""
    texts = research_ui.texts_frame(compared)
    assert list(texts.columns) == ["method", "sample 1", "sample 2"] and len(texts) == len(METHODS)

    swept = research.sweep(service, "sentiment", INPUTS[:1], 1, "sentiment", settings(), "0,1,2")
    frames = research_ui.sweep_frames(swept)
    assert set(frames) == set(research_ui.SWEEP_PLOTS)
    reward = frames["mean_reward"]
    means = reward[reward["series"] == "mean"]
    assert list(means["alpha"]) == [0.0, 1.0, 2.0]
    rule = reward[reward["series"] == research_ui.TRAINED_SERIES]
    assert list(rule["alpha"]) == [1.0, 1.0]  # the trained strength, a vertical rule


@pytest.mark.slow  # the real app (embedded model, reward models) through gradio_client
def test_the_panels_are_in_the_api_and_answer(playground_app):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    client = Client(playground_app.url, verbose=False)
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    for task in TASKS:
        for action in ("compare", "sweep"):
            assert f"/{action}_{task}" in api
        names = [p["parameter_name"] for p in api[f"/sweep_{task}"]["parameters"]]
        assert names[-3:] == ["prompts", "samples_per_prompt", "alphas"] and "adapter" in names
    with pytest.raises(AppError, match="alphas must be a number from 0 to 5, got 9"):
        client.predict(text="The fans", adapter="toxicity", alphas="0,9", api_name="/sweep_toxicity")
    *_, data = client.predict(text="The referee made a terrible call, and the fans", adapter="toxicity", prompts="input",
                              samples_per_prompt=1, max_new_tokens=4, api_name="/compare_toxicity")
    assert list(data["methods"]) == list(METHODS) and data["n_prompts"] == 1


def test_the_docstring_examples_hold():
    import doctest

    assert doctest.testmod(research).failed == 0
