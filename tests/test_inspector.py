"""The token inspector: what it shows is what the run sampled from; branching is seeded and reproducible."""

from __future__ import annotations

import math

import pytest
import torch

from ipa.decoding.inspection import TOP_K
from ipa.decoding.inspector import branch
from ipa.decoding.policy_math import filter_logits, tailored_logprobs
from ipa.decoding.run import DecodeConfig, DecodeError, DecodeRun, TailoredPolicy
from ipa.decoding.engine import Request, generate, run_steps
from tests.helpers import PROMPTS, composed, with_adapter

CONFIG = DecodeConfig(max_new_tokens=8, alpha=1.5, top_p=0.8, temperature=0.9, seed=5)


def full_forward(host, prompt: str, completion: list[int], adapter: str):
    """Base and adapter logits at each step of a completion, from one forward pass over prompt + completion."""
    prompt_ids = host.tokenizer(prompt, add_special_tokens=False).input_ids
    ids = torch.tensor([prompt_ids + completion])
    positions = slice(len(prompt_ids) - 1, len(prompt_ids) - 1 + len(completion))
    with torch.no_grad():
        with host.base_only() as model:
            base = model(ids).logits[0, positions]
        with host.only(adapter) as model:
            steered = model(ids).logits[0, positions]
    return base, steered


def test_inspecting_changes_nothing_in_the_decoding(tiny_host):
    policy = with_adapter(tiny_host)
    plain, inspected = generate(policy, PROMPTS, CONFIG, n=2), generate(policy, PROMPTS, CONFIG, n=2, inspect=True)
    for a, b in zip(plain.base + plain.tailored, inspected.base + inspected.tailored, strict=True):
        assert a.token_ids == b.token_ids
        assert a.tailored_logprobs == pytest.approx(b.tailored_logprobs, abs=1e-5) and a.kl == pytest.approx(b.kl, abs=1e-5)
        assert a.steps == [] and len(b.steps) == len(b.token_ids)


def test_the_base_column_is_inspected_without_adapter_rows_then_replayed_with_them(tiny_host):
    policy = with_adapter(tiny_host)
    run = DecodeRun(policy, PROMPTS, CONFIG, n=2, inspect=True)
    assert [streams for _, kind, streams, _ in Request(run).kinds if kind != "base"] == [run.tailored]
    for run in run_steps(run):
        pass
    result = run.result(final=True)
    assert all(c.steps.partial for c in result.base) and not any(c.steps.partial for c in result.tailored)
    replay = run.base_replay()
    assert replay.steered == list(range(replay.n_streams)) == list(range(len(result.base)))
    for replay in run_steps(replay):
        pass
    for original, again in zip(result.base, replay.result(final=True).base, strict=True):
        assert again.token_ids == original.token_ids and again.text == original.text
        assert again.base_logprobs == pytest.approx(original.base_logprobs, abs=1e-5)
        for part, whole in zip(original.steps, again.steps, strict=True):
            assert part.tailored == [] and part.adapters == {} and math.isnan(part.kl) and math.isnan(part.chosen.tailored)
            assert [x.token_id for x in part.base] == [x.token_id for x in whole.base]
            assert len(whole.tailored) == len(whole.adapters["steer"]) == TOP_K and whole.kl >= 0
    with pytest.raises(DecodeError, match="replay needs one token list a stream"):
        DecodeRun(policy, PROMPTS, CONFIG, columns=("base",), inspect=True, replay=[[1]])
    with pytest.raises(DecodeError, match="Only the base column"):
        run.base_replay(run.tailored)


@pytest.mark.parametrize("column", ["tailored", "base"])
def test_the_inspector_shows_the_distributions_the_run_sampled_from(tiny_host, column):
    policy = with_adapter(tiny_host)
    result = generate(policy, PROMPTS, CONFIG, inspect=True)
    for i, completion in enumerate(getattr(result, column)):
        base_logits, adapter_logits = full_forward(tiny_host, PROMPTS[i], completion.token_ids, "steer")
        base = torch.log_softmax(base_logits, -1)
        tailored = tailored_logprobs(base_logits, [adapter_logits], base_logits, [CONFIG.alpha])
        adapter = torch.log_softmax(adapter_logits, -1)
        drawn_from = tailored if column == "tailored" else base
        sampled = torch.softmax(filter_logits(drawn_from, CONFIG.temperature, CONFIG.top_k, CONFIG.top_p), -1)
        for t, step in enumerate(completion.steps):
            # the chosen token's probabilities are the ones the run recorded when it drew it
            assert step.chosen.token_id == completion.token_ids[t]
            assert step.chosen.base == pytest.approx(float(torch.tensor(completion.base_logprobs[t]).exp()), abs=1e-5)
            assert step.chosen.sampled > 0
            if column == "tailored":
                assert step.chosen.tailored == pytest.approx(float(torch.tensor(completion.tailored_logprobs[t]).exp()), abs=1e-5)
                assert step.kl == pytest.approx(completion.kl[t], abs=1e-5)
            # each list is the top of its distribution, most likely first, with every distribution's probability
            for listed, reference in ((step.base, base[t]), (step.tailored, tailored[t]), (step.adapters["steer"], adapter[t])):
                assert len(listed) == TOP_K
                assert [x.token_id for x in listed] == torch.topk(reference, TOP_K).indices.tolist()
            for x in step.base + step.tailored + step.adapters["steer"]:
                assert x.base == pytest.approx(float(base[t, x.token_id].exp()), abs=1e-4)
                assert x.tailored == pytest.approx(float(tailored[t, x.token_id].exp()), abs=1e-4)
                assert x.adapters["steer"] == pytest.approx(float(adapter[t, x.token_id].exp()), abs=1e-4)
                assert x.sampled == pytest.approx(float(sampled[t, x.token_id]), abs=1e-4)
            kl = (tailored[t].exp() * (tailored[t] - base[t])).sum()
            assert step.kl == pytest.approx(float(kl), abs=1e-4)  # for the base column: what the adapter would move


def test_greedy_steps_and_composed_adapters(tiny_host):
    policy = composed(tiny_host, alpha_2=0.5)
    result = generate(policy, PROMPTS[:1], DecodeConfig(max_new_tokens=6, temperature=0), inspect=True)
    for step in result.tailored[0].steps:
        assert step.chosen.sampled == 1.0 and step.chosen.token_id == step.tailored[0].token_id
        assert set(step.adapters) == {"steer", "second"} and set(step.chosen.adapters) == {"steer", "second"}
    for step in result.base[0].steps:
        assert step.chosen.token_id == step.base[0].token_id


def test_inspecting_without_an_adapter_lists_the_base(tiny_host):
    result = generate(TailoredPolicy(tiny_host), PROMPTS[:1], CONFIG, inspect=True)
    step = result.tailored[0].steps[0]
    assert step.adapters == {} and step.kl == 0
    assert [x.token_id for x in step.tailored] == [x.token_id for x in step.base]


def test_branching_with_the_chosen_token_gives_back_the_text_and_another_token_branches(tiny_host):
    policy = with_adapter(tiny_host)
    config = DecodeConfig(max_new_tokens=12, alpha=1.5, seed=5, stop_at_eos=False)
    result = generate(policy, PROMPTS[:2], config, n=2, inspect=True)
    for column in ("tailored", "base"):
        completion = getattr(result, column)[3]  # prompt 1, sample 1: the pair's own random numbers
        same = branch(policy, PROMPTS[1], result, column, 3, 4, completion.token_ids[4], config)
        assert same.text(column) == completion.text and same.prefix_ids == completion.token_ids[:5]
    step = result.tailored[3].steps[4]
    other_token = next(x.token_id for x in step.tailored if x.token_id != step.chosen.token_id)
    first = branch(policy, PROMPTS[1], result, "tailored", 3, 4, other_token, config, inspect=True)
    again = branch(policy, PROMPTS[1], result, "tailored", 3, 4, other_token, config)
    assert first.text("tailored") == again.text("tailored") and first.text("base") == again.text("base")
    assert first.prefix_ids[-1] == other_token and first.text("tailored") != result.tailored[3].text
    assert len(first.result.tailored[0].token_ids) == 12 - 5 and len(first.result.base[0].steps) == 12 - 5


def test_bad_branches_are_clear_errors(tiny_host):
    policy = with_adapter(tiny_host)
    result = generate(policy, PROMPTS[:1], CONFIG)
    for kwargs, message in (({"step": 8}, "step must be from 0 to 7"), ({"token_id": -1}, "token_id must be"),
                            ({"column": "middle"}, "column must be"), ({"index": 2}, "no tailored continuation 2")):
        args = {"column": "tailored", "index": 0, "step": 1, "token_id": 5, **kwargs}
        with pytest.raises(DecodeError, match=message):
            branch(policy, PROMPTS[0], result, config=CONFIG, **args)
    word = tiny_host.tokenizer(" lantern", add_special_tokens=False).input_ids[-1]
    last = branch(policy, PROMPTS[0], result, "tailored", 0, 7, word, CONFIG)  # nothing left to write after the last step
    assert last.result.tailored[0].token_ids == [] and last.text("tailored").endswith(tiny_host.tokenizer.decode([word]))
