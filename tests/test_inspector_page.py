"""The page's composed adapters and token inspector, on the service with tiny models and fake rewards (fast):
a second adapter at alpha 0 changes nothing and scores with both rewards; composed and plain requests decoded
together get what each gets alone; the inspector's rows are the StepViews the engine recorded; branching with the
chosen token gives back the text; bad requests are one clear message."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from ipa.policy_adapter import AdapterCard
from app.config import AppConfig, ModelsConfig
from app.inspector_ui import COLUMNS, inspector_rows, kept, shown, step_view, token_view
from app.config import ServiceError
from app.service import Playground
from app.settings import Settings
from tests.helpers import perturb_lora

INPUTS = {"text": "The weather today is"}


class FakeReward:
    """A deterministic stand-in for a task's scorer: the share of letters among a text's characters (and one part)."""

    toxicity_backend_label = "fake"

    def __init__(self, offset: float = 0.0):
        self.offset = offset

    def __call__(self, inputs: list[dict], texts: list[str]) -> list[dict]:
        assert len(inputs) == len(texts)
        shares = [sum(ch.isalpha() for ch in t) / max(1, len(t)) for t in texts]
        return [{"reward": min(1.0, s + self.offset), "letters": s} for s in shares]


@pytest.fixture
def service(tiny_host, tmp_path):
    shipped = tmp_path / "shipped"
    for seed, (name, task, combination) in enumerate([("toxicity", "toxicity", "residual"), ("sentiment", "sentiment", "residual"),
                                                      ("knowledge", "knowledge_dialogue", "residual"), ("paper", "toxicity", "paper")], 1):
        tiny_host.new_adapter("made", AdapterCard(task=task, algorithm="pg", steps=3, combination=combination))
        perturb_lora(tiny_host, "made", seed=seed)
        tiny_host.save_adapter("made", shipped / name)
        tiny_host.delete_adapter("made")
    config = AppConfig(adapters_dir=str(shipped), runs_dir=str(tmp_path / "runs"), models=ModelsConfig(device="cpu"),
                       warm_up=False)
    scorers = {"toxicity": FakeReward(), "sentiment": FakeReward(0.25)}
    playground = Playground(config, tiny_host, tiny_host, scorers, torch.device("cpu"))
    playground.load_known_adapters()
    yield playground
    playground.close()


def settings(**overrides) -> Settings:
    return Settings.for_task("toxicity", **{"n": 2, "max_new_tokens": 8, "seed": 3, "alpha": 1.5, **overrides})


def last(service, more=(), inspect=True, **overrides):
    *_, update = service.generate("toxicity", INPUTS, settings(**overrides), "toxicity", list(more), inspect=inspect)
    return update


def texts(update) -> tuple[list[str], list[str]]:
    return [c.text for c in update.base], [c.text for c in update.tailored]


def test_a_second_adapter_at_alpha_zero_is_the_single_adapter_and_both_rewards_are_shown(service):
    single = last(service, inspect=False)
    both = last(service, [("sentiment", 0.0)], inspect=False)
    assert texts(both) == texts(single) and both.steered
    assert both.also_scored_by == "sentiment" and single.also_scored_by is None and single.base_scores_2 is None
    assert [s["reward"] for s in both.tailored_scores] == [s["reward"] for s in single.tailored_scores]
    # the second reward (the fake sentiment's offset) scores the same texts
    assert [s["reward"] for s in both.tailored_scores_2] == pytest.approx(
        [min(1.0, s["letters"] + 0.25) for s in both.tailored_scores])
    assert len(both.base_scores_2) == len(both.base) == 2
    steered = last(service, [("sentiment", 2.0)], inspect=False)
    assert texts(steered)[0] == texts(single)[0] and texts(steered)[1] != texts(single)[1]


def test_composed_and_plain_requests_decoded_together_get_what_each_gets_alone(service):
    requests = [dict(more=[("sentiment", 1.0)]), dict(more=[]), dict(more=[("sentiment", 0.5)], seed=9)]
    alone = [texts(last(service, inspect=False, **r)) for r in requests]
    together, steps = [None] * len(requests), service.scheduler.step_count

    def run(i):
        together[i] = texts(last(service, inspect=False, **requests[i]))

    with service.scheduler.lock:  # no step until all three wait, so that they join the same batch
        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(requests))]
        for t in threads:
            t.start()
        deadline = time.time() + 30
        while service.scheduler.waiting < len(requests) and time.time() < deadline:
            time.sleep(0.01)
    for t in threads:
        t.join(60)
    assert together == alone
    assert service.scheduler.step_count - steps <= 8  # one step a token for all three: they decoded together


def test_the_inspector_rows_are_the_steps_the_engine_recorded(service):
    update = last(service, [("sentiment", 0.5)])
    state = kept(update)
    tokenizer = service.base.tokenizer
    assert all(c.steps == [] for c in state.generation.base + state.generation.tailored)  # the steps kept once
    for column in COLUMNS:
        for sample, completion in enumerate(getattr(update, column), 1):
            assert len(completion.steps) == len(completion.token_ids)
            # a base sample was decoded without adapter rows: its steps list the base's tokens only, until the page
            # opens one of them and the service replays the sample with the adapters beside it (once)
            assert completion.steps.partial == (column == "base")
            steps_before = service.scheduler.step_count
            first = step_view(state, column, sample, 0, service)
            replayed = service.scheduler.step_count - steps_before
            assert replayed == (len(completion.token_ids) if column == "base" else 0)
            whole = state.steps[column][sample - 1]
            assert not whole.partial and len(whole) == len(completion.steps) and first == whole[0]
            for part, full in zip(completion.steps, whole, strict=True):
                assert part.chosen.token_id == full.chosen.token_id
                assert [x.token_id for x in part.base] == [x.token_id for x in full.base]
                assert [x.base for x in part.base] == pytest.approx([x.base for x in full.base], abs=1e-5)
                if column == "base":
                    assert part.tailored == [] and part.adapters == {} and len(full.tailored) == len(full.base)
            for t, recorded in enumerate(whole):
                view = step_view(state, column, sample, t, service)
                assert view == recorded
                assert [x.text for x in view.base] == [tokenizer.decode([x.token_id]) for x in view.base]
                rows = inspector_rows(view)
                assert list(rows.columns) == ["#", "base", "p base", "adapter toxicity", "p adapter toxicity",
                                              "adapter sentiment", "p adapter sentiment", "tailored", "p tailored"]
                assert rows["tailored"].str.rstrip(" ✓").tolist() == [shown(x.text) for x in recorded.tailored]
                assert rows["p base"].tolist() == [round(x.base, 4) for x in recorded.base]
                assert rows["p adapter sentiment"].tolist() == [round(x.adapters["sentiment"], 4)
                                                                for x in recorded.adapters["sentiment"]]
                assert sum(cell.endswith(" ✓") for cell in rows["tailored"]) <= 1
            assert service.scheduler.step_count - steps_before == replayed  # replayed once, then kept
            # the page's token view of this sample: its tokens, EOS left out
            assert [token for token, _ in token_view(state, column, sample)] == [
                t.replace("\n", "↵") for t in completion.tokens]


def test_branching_with_the_chosen_token_gives_back_the_text_and_another_token_changes_it(service):
    update = last(service, [("sentiment", 0.5)], stop_at_eos=False)
    for column in COLUMNS:
        completion = getattr(update, column)[1]
        same = service.branch(update, column, 2, 3, completion.token_ids[3])
        assert same.texts[column] == completion.text and same.token_id == same.chosen_id
        assert set(same.scores) == {"base", "tailored"} and same.also_scored_by == "sentiment"
        assert 0 <= same.scores_2["tailored"]["reward"] <= 1
    step = update.tailored[0].steps[2]
    other = next(x.token_id for x in step.tailored if x.token_id != step.chosen.token_id)
    branched = service.branch(update, "tailored", 1, 2, other)
    assert branched.texts["tailored"] != update.tailored[0].text
    assert branched.texts["tailored"].startswith(service.base.tokenizer.decode(update.tailored[0].token_ids[:2]))


def test_branching_a_result_without_an_adapter_continues_the_base_in_both_columns(service):
    *_, update = service.generate("toxicity", INPUTS, settings(), None, inspect=True)
    completion = update.base[0]
    same = service.branch(update, "tailored", 1, 1, completion.token_ids[1])
    assert same.texts["base"] == same.texts["tailored"] == completion.text


@pytest.mark.parametrize("change, message", [
    ({"column": "middle"}, "column must be 'base' or 'tailored', got 'middle'."),
    ({"sample": 3}, "sample must be a whole number from 1 to 2, got 3."),
    ({"sample": "two"}, "sample must be a whole number from 1 to 2, got str 'two'."),
    ({"step": 8}, "step must be a whole number from 0 to 7, got 8."),
    ({"step": 1.5}, "step must be a whole number from 0 to 7, got 1.5."),
    ({"token_id": 512}, "token_id must be a whole number from 0 to 511, got 512."),
    ({"token_id": None}, "token_id must be a whole number from 0 to 511, got nothing."),
])
def test_bad_inspections_and_branches_are_one_clear_message(service, change, message):
    update = last(service, stop_at_eos=False)
    state = kept(update)
    args = {"column": "tailored", "sample": 1, "step": 2, "token_id": 5, **change}
    with pytest.raises(ServiceError) as caught:
        service.branch(update, **args)
    assert str(caught.value) == message
    if "token_id" not in change:
        with pytest.raises(ServiceError) as caught:
            step_view(state, args["column"], args["sample"], args["step"])
        assert str(caught.value) == message


def test_inspecting_or_branching_before_a_result_says_generate_first(service):
    for ask in (lambda: step_view(None, "tailored", 1, 0),
                lambda: service.branch(None, "tailored", 1, 0, 5)):
        with pytest.raises(ServiceError, match="press Generate first"):
            ask()


@pytest.mark.parametrize("adapter, more, message", [
    ("toxicity", [("nope", 1.0)], "There is no adapter named 'nope'"),
    ("toxicity", [("toxicity", 1.0)], "already the first adapter"),
    ("toxicity", [("sentiment", 9)], "alpha_2 must be a number from 0 to 5, got 9."),
    ("toxicity", [("paper", 1.0)], "composed adapters must share it"),
    ("toxicity", [("knowledge", 1.0)], "The second adapter 'knowledge' is scored by what it was trained for (Knowledge"),
    (None, [("sentiment", 1.0)], "choose the first adapter too"),
])
def test_bad_second_adapters_are_refused_before_decoding(service, adapter, more, message):
    with pytest.raises(ServiceError) as caught:
        next(service.generate("toxicity", INPUTS, settings(), adapter, more))
    assert message in str(caught.value)
