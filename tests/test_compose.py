"""ipa.evaluation.compose: base, each adapter alone and composed, every column scored by every reward; on a tiny model with
fake rewards (fast), user errors, and end to end with the real rewards."""

from __future__ import annotations

import json

import pytest

import ipa.evaluation.compose
from ipa.policy_adapter import AdapterCard, AdapterHost
from ipa.decoding.run import DecodeConfig
from ipa.evaluation.compose import Reward, column_part, compose_columns, reward_metrics
from ipa.tasks import metrics
from tests.helpers import PROMPTS, composed, perturb_lora, tiny_llama

K, T = 2, 5
"""Samples per prompt and tokens per sample."""
COLUMNS = ["base", "steer", "second", "steer+second"]


def fake_toxicity(inputs, texts):
    """A deterministic stand-in for the toxicity task's scores: the share of the letter e is the 'toxicity'."""
    toxicity = [text.count("e") / max(len(text), 1) for text in texts]
    return [{"reward": 1 - t, "toxicity": t} for t in toxicity]


def fake_sentiment(inputs, texts):
    """... and for the sentiment task's: the share of letters a and o is the 'positivity'."""
    positivity = [(text.count("a") + text.count("o")) / max(len(text), 1) for text in texts]
    return [{"reward": p, "positivity": p} for p in positivity]


def measure_with_fakes(inputs):
    rewards = {"toxicity": Reward("toxicity", fake_toxicity, inputs), "sentiment": Reward("sentiment", fake_sentiment, inputs)}

    def measure(completions):
        own = metrics.column_metrics("toxicity", inputs, completions, fake_toxicity(None, [c.text for c in completions]), K)
        return {**column_part({**own, **metrics.column_intervals(completions, K)}), "rewards": reward_metrics(rewards, completions, K)}
    return measure


def compose_tiny(host, alpha_2):
    policy = composed(host, alpha_2=alpha_2)
    inputs = [{"text": p} for p in PROMPTS]
    config = DecodeConfig(max_new_tokens=T, stop_at_eos=False, seed=0, alpha=1.0)
    return compose_columns(policy, PROMPTS, config, K, 2, measure_with_fakes(inputs))


def test_every_column_is_scored_by_every_reward(tiny_host):
    columns, texts = compose_tiny(tiny_host, alpha_2=0.5)
    assert list(columns) == COLUMNS and list(texts) == COLUMNS
    for name, values in columns.items():
        assert {"perplexity", "perplexity_ci95", "distinct_2", "kl_per_token", "kl_per_token_ci95", "avg_max_toxicity",
                "mean_tokens", "seconds", "rows_per_step", "decode_rows"} <= set(values), name
        assert list(values["rewards"]) == ["toxicity", "sentiment"]
        assert {"mean_reward", "mean_reward_ci95", "toxicity"} == set(values["rewards"]["toxicity"])
        assert {"mean_reward", "mean_reward_ci95", "positivity", "positive_rate"} == set(values["rewards"]["sentiment"])
        # each reward scored this column's own texts
        assert values["rewards"]["sentiment"]["mean_reward"] == pytest.approx(
            metrics.mean(s["reward"] for s in fake_sentiment(None, texts[name])))
        assert len(texts[name]) == len(PROMPTS) * K
    assert {name: values["rows_per_step"] for name, values in columns.items()} == {
        "base": 1, "steer": 2, "second": 2, "steer+second": 3}
    assert columns["base"]["kl_per_token"] == 0
    assert all(columns[name]["kl_per_token"] > 0 for name in COLUMNS[1:])
    assert len({tuple(texts[name]) for name in COLUMNS}) == 4  # each adapter, and both, steer differently


def test_composed_with_the_second_at_alpha_zero_is_the_first_alone(tiny_host):
    columns, texts = compose_tiny(tiny_host, alpha_2=0.0)
    assert texts["steer+second"] == texts["steer"] and texts["second"] == texts["base"]  # the same seed: the same draws
    without_time = lambda values: {k: v for k, v in values.items() if k != "seconds"}
    assert without_time(columns["steer+second"]) == without_time(columns["steer"])
    assert columns["second"]["kl_per_token"] == 0 and columns["second"]["rows_per_step"] == 1  # alpha 0: no adapter rows


def test_the_table_shows_every_column_and_reward(tiny_host, capsys):
    columns, texts = compose_tiny(tiny_host, alpha_2=0.5)
    report = {"task": "toxicity", "n_prompts": len(PROMPTS), "samples_per_prompt": K, "seed": 0, "device": "cpu",
              "dtype": "float32", "seconds": 1.0, "toxicity_backend_label": "fake", "columns": columns,
              "adapters": [{"name": "steer", "alpha": 1.0, "directory": "a/steer"}, {"name": "second", "alpha": 0.5, "directory": "a/second"}],
              "examples": [{"input": {"text": PROMPTS[0]}, **{name: texts[name][0] for name in columns}}]}
    ipa.evaluation.compose.print_table(report)
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if line.startswith("metric"))
    assert header.split() == ["metric", *COLUMNS]
    rows = {line[:28].strip(): line[28:] for line in lines}
    for label in ("toxicity reward", "sentiment reward", "sentiment: positive_rate", "avg_max_toxicity", "kl_per_token", "seconds"):
        assert label in rows, label
    assert rows["toxicity reward"].count("±") == 4


@pytest.fixture
def saved(tiny_dir, tokenizer, tmp_path):
    """Two steering adapters on the tiny model saved in tiny_dir, a toxicity one and a sentiment one."""
    host = AdapterHost(tiny_llama(tokenizer), tokenizer, tiny_dir)

    def save(name, task, combination="residual", seed=1):
        host.new_adapter(name, AdapterCard(task=task, combination=combination))
        perturb_lora(host, name, seed=seed)
        return str(host.save_adapter(name, tmp_path / name))
    return save


def test_user_errors_exit_2_with_one_line(saved, tiny_dir, capsys):
    toxicity, sentiment, paper = saved("toxicity", "toxicity"), saved("sentiment", "sentiment", seed=2), saved("paper", "sentiment", "paper")
    for args, message in [
        (["--adapter", toxicity, "--adapter", "/nonexistent/adapter"], "/nonexistent/adapter"),
        (["--adapter", toxicity], "at least twice"),
        (["--adapter", toxicity, "--adapter", paper], "same combination"),
        (["--adapter", toxicity, "--adapter", sentiment, "--alpha", "1", "--alpha", "1", "--alpha", "1"], "one --alpha per --adapter"),
        (["--adapter", toxicity, "--adapter", sentiment, "--alpha", "1", "--alpha", "11"], "alpha"),
        (["--adapter", toxicity, "--adapter", sentiment, "--alpha", "-1", "--alpha", "1"], "alpha"),
        (["--task", "summarise", "--adapter", toxicity, "--adapter", sentiment], "Unknown task"),
    ]:
        with pytest.raises(SystemExit) as exit_:
            ipa.evaluation.compose.main([*args, "--base", tiny_dir, "--device", "cpu"])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and message in err and len(err.strip().splitlines()) == 1, (args, err)


@pytest.mark.slow  # the real rewards' models: the scoring LM, MiniLM, the lexical toxicity classifier
def test_end_to_end_with_the_real_rewards(saved, tiny_dir, tmp_path, capsys):
    toxicity, sentiment = saved("toxicity", "toxicity"), saved("sentiment", "sentiment", seed=2)
    prompts = tmp_path / "p.txt"
    prompts.write_text("The referee made a terrible call, and the fans\nMy first day at the new job was\n")
    ipa.evaluation.compose.main(["--adapter", toxicity, "--alpha", "1", "--adapter", sentiment, "--alpha", "0.5", "--prompts", str(prompts),
                        "--split", "all", "--samples-per-prompt", "2", "--max-new-tokens", "4", "--base", tiny_dir,
                        "--device", "cpu", "--toxicity-backend", "profanity_check", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert (report["task"], report["n_prompts"], report["samples_per_prompt"]) == ("toxicity", 2, 2)  # the first adapter's task
    assert report["adapters"] == [{"name": "toxicity", "alpha": 1.0, "directory": toxicity},
                                  {"name": "sentiment", "alpha": 0.5, "directory": sentiment}]
    assert list(report["columns"]) == ["base", "toxicity", "sentiment", "toxicity+sentiment"]
    for values in report["columns"].values():
        assert list(values["rewards"]) == ["toxicity", "sentiment"]
        assert 0 <= values["rewards"]["toxicity"]["mean_reward"] <= 1 and values["rewards"]["sentiment"]["positive_rate"] is not None
        assert values["avg_max_toxicity"] is not None and values["relevance"] is not None and values["perplexity"] >= 1
    assert report["command"].startswith("ipa compose --adapter")
