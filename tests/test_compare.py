"""ipa.evaluation.compare: the six methods on a tiny model with a fake reward (fast), and end to end on the embedded model."""

from __future__ import annotations

import doctest
import json

import pytest

import ipa.evaluation.compare
from ipa.decoding.run import DecodeConfig
from ipa.evaluation.compare import METHODS, compare_methods, decode_method
from ipa.tasks import TASKS, metrics
from tests.helpers import PROMPTS, run_module, with_adapter

K, T = 2, 5
"""Samples per prompt and tokens per sample (no EOS stop, so every sample has exactly T tokens)."""


def fake_reward(inputs, texts):
    """A deterministic stand-in for the task's reward: the share of the letter e."""
    return [text.count("e") / max(len(text), 1) for text in texts]


def fake_measure(inputs):
    def measure(completions):
        rewards = fake_reward(inputs, [c.text for c in completions])
        scores = [{"reward": r, "positivity": r} for r in rewards]
        return {**metrics.column_metrics("sentiment", inputs, completions, scores, K), **metrics.column_intervals(completions, K)}
    return measure


@pytest.fixture
def compared(tiny_host):
    policy = with_adapter(tiny_host)
    inputs = [{"text": p} for p in PROMPTS]
    config = DecodeConfig(max_new_tokens=T, stop_at_eos=False, seed=0)
    methods, texts = compare_methods(policy, TASKS["sentiment"], inputs, config, K, 2, fake_reward, fake_measure(inputs))
    return policy, inputs, config, methods, texts


def test_every_method_is_reported_with_its_metrics_and_compute(compared):
    _, inputs, _, methods, texts = compared
    assert list(methods) == list(METHODS) and set(texts) == set(METHODS)
    for name, values in methods.items():
        assert {"mean_reward", "mean_reward_ci95", "perplexity", "perplexity_ci95", "distinct_2", "kl_per_token",
                "seconds", "decode_rows", "prefill_rows", "samples_decoded"} <= set(values), name
        assert len(texts[name]) == len(inputs) * K
    assert methods["base"]["kl_per_token"] == 0 and methods["best_of_n"]["kl_per_token"] == 0
    assert methods["ipa"]["kl_per_token"] > 0 and methods["prompted_ipa"]["kl_per_token"] > 0
    assert texts["prompted"] != texts["base"] and texts["ipa"] != texts["base"]


def test_best_of_n_keeps_the_highest_reward_of_each_n(compared):
    policy, inputs, config, methods, texts = compared
    n = methods["best_of_n"]["n"]
    assert n == 2  # the adapter sits on the base: 2 rows a token, and every sample has T tokens
    prompts = [TASKS["sentiment"].build_prompt(x, policy.tokenizer) for x in inputs]
    drawn = [c.text for c in decode_method(policy, prompts, config, K * n, "base", 2).completions]  # the same seed: the same draws
    rewards = fake_reward(inputs, drawn)
    groups = [list(range(g, g + n)) for g in range(0, len(drawn), n)]
    assert len(groups) == len(texts["best_of_n"])
    for group, kept in zip(groups, texts["best_of_n"]):
        assert kept in [drawn[i] for i in group]
        assert fake_reward(None, [kept])[0] == max(rewards[i] for i in group)


def test_compute_accounting_matches_a_hand_count(compared):
    policy, inputs, _, methods, _ = compared
    P, task, tokenizer = len(inputs), TASKS["sentiment"], policy.tokenizer

    def prompt_tokens(instructed):
        return sum(len(tokenizer(task.build_prompt(x, tokenizer, instructed=instructed), add_special_tokens=False).input_ids)
                   for x in inputs)

    plain, told = prompt_tokens(False), prompt_tokens(True)
    # method: (rows a token, samples decoded, prompt tokens of one sample per prompt)
    hand = {"base": (1, P * K, plain), "ipa": (2, P * K, plain), "best_of_n": (1, P * K * 2, plain),
            "prompted": (1, P * K, told), "prompted_ipa": (2, P * K, told), "adapter_alone": (2, P * K, plain)}
    for name, (rows, samples, prompt) in hand.items():
        got = methods[name]
        assert got["rows_per_step"] == rows, name
        assert got["samples_decoded"] == samples, name
        assert got["decode_rows"] == rows * samples * T, name
        assert got["prefill_rows"] == rows * (samples // P) * prompt, name
    assert methods["best_of_n"]["decode_rows"] == methods["ipa"]["decode_rows"]  # equal compute, by construction
    assert methods["best_of_n"]["decode_rows_vs_ipa"] == 1.0 and methods["base"]["decode_rows_vs_ipa"] == 0.5


def test_the_adapter_alone_is_ipa_at_alpha_1_when_the_adapter_sits_on_the_base(compared):
    """The identity made explicit: LoRA on the base, residual, alpha 1: the tuned model alone writes ipa's texts, and
    its KL from the base (the alone run's initial-model rows are the base's) is ipa's."""
    _, _, _, methods, texts = compared
    assert texts["adapter_alone"] == texts["ipa"] and methods["adapter_alone"]["same_texts_as_ipa"] == 1.0
    assert methods["adapter_alone"]["kl_per_token"] == pytest.approx(methods["ipa"]["kl_per_token"], rel=1e-3)
    assert methods["adapter_alone"]["perplexity"] == pytest.approx(methods["ipa"]["perplexity"], rel=1e-3)


def test_the_docstring_examples_hold():
    assert doctest.testmod(ipa.evaluation.compare).failed == 0


@pytest.mark.slow  # a process, the embedded model and the reward models
def test_compare_end_to_end_on_the_embedded_model(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("The train was forty minutes late, and when it finally arrived\nMy first day at the new job was\n")
    done = run_module("ipa.evaluation.compare", "--task", "sentiment", "--prompts", str(prompts), "--split", "all",
                      "--samples-per-prompt", "1", "--max-new-tokens", "6", "--device", "cpu", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["task"], report["n_prompts"], report["samples_per_prompt"], report["best_of_n"]) == ("sentiment", 2, 1, 2)
    assert list(report["methods"]) == list(METHODS)
    for values in report["methods"].values():
        assert 0 <= values["mean_reward"] <= 1 and 0 <= values["relevance"] <= 1 and values["perplexity"] >= 1
        assert values["positive_rate"] is not None and values["seconds"] > 0
    rows = {name: values["rows_per_step"] for name, values in report["methods"].items()}
    assert rows == {"base": 1, "ipa": 2, "best_of_n": 1, "prompted": 1, "prompted_ipa": 2, "adapter_alone": 2}
    assert report["methods"]["adapter_alone"]["same_texts_as_ipa"] > 0.5  # bfloat16: a few may part ways
    assert report["methods"]["best_of_n"]["samples_decoded"] == 4 and report["instruction"] == TASKS["sentiment"].instruction


@pytest.mark.parametrize("args, message", [
    (["--task", "summarise"], "Unknown task"),
    (["--task", "sentiment", "--adapter", "/nonexistent/adapter"], "/nonexistent/adapter"),
    (["--task", "sentiment", "--best-of-n", "-1"], "best_of_n"),
])
def test_user_errors_exit_2_with_one_line(args, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        ipa.evaluation.compare.main([*args, "--device", "cpu"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_a_given_n_is_used_and_its_compute_reported(tiny_host):
    policy = with_adapter(tiny_host)
    inputs = [{"text": p} for p in PROMPTS]
    config = DecodeConfig(max_new_tokens=T, stop_at_eos=False, seed=0)
    methods, texts = compare_methods(policy, TASKS["sentiment"], inputs, config, K, 2, fake_reward, fake_measure(inputs), n=3)
    bon = methods["best_of_n"]
    assert (bon["n"], bon["samples_decoded"], bon["decode_rows"]) == (3, len(inputs) * K * 3, len(inputs) * K * 3 * T)
    assert bon["decode_rows_vs_ipa"] == 1.5 and len(texts["best_of_n"]) == len(inputs) * K
