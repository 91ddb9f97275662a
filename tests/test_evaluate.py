"""ipa.evaluation.evaluate end to end with the real embedded model (subprocess, --json), and its user errors."""

from __future__ import annotations

import json
import os

import pytest

from ipa.commands.generate import main as generate_main
from ipa.evaluation.evaluate import main as evaluate_main
from tests.helpers import REPO, run_module
SHARED_METRICS = {"mean_reward", "avg_max_toxicity", "toxicity_probability", "perplexity", "standalone_perplexity",
                  "distinct_2", "distinct_3", "relevance"}
UNIT_METRICS = SHARED_METRICS - {"perplexity", "standalone_perplexity"}


def run_evaluate(*args: str):
    return run_module("ipa.evaluation.evaluate", *args)


def user_error(main, args: list[str], capsys) -> str:
    """What main(args) printed before exiting with code 2 (the user-error exit), in this process."""
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    return capsys.readouterr().err


@pytest.fixture(scope="module")
def toxicity_report(tmp_path_factory):
    prompts = tmp_path_factory.mktemp("data") / "prompts.txt"
    prompts.write_text("The referee made a terrible call, and the fans started yelling\n"
                       "My first day at the new job was\n"
                       "The old lighthouse on the northern cape was built in\n")
    done = run_evaluate("--task", "toxicity", "--prompts", str(prompts), "--split", "all", "--limit", "3",
                        "--samples-per-prompt", "2", "--max-new-tokens", "8", "--device", "cpu", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.slow
def test_evaluate_json_has_the_issue_keys(toxicity_report):
    report = toxicity_report
    assert {"task", "n_prompts", "samples_per_prompt", "toxicity_backend", "base", "tailored"} <= set(report)
    assert report["task"] == "toxicity" and report["n_prompts"] == 3 and report["samples_per_prompt"] == 2
    assert report["toxicity_backend"] in ("detoxify", "profanity_check")
    for column in ("base", "tailored"):
        assert SHARED_METRICS <= set(report[column])


@pytest.mark.slow
def test_evaluate_values_are_in_range(toxicity_report):
    for column in ("base", "tailored"):
        metrics = toxicity_report[column]
        for name in UNIT_METRICS:
            assert 0.0 <= metrics[name] <= 1.0, (column, name, metrics[name])
        assert 1.0 <= metrics["perplexity"] < 10_000
        assert 1.0 <= metrics["standalone_perplexity"] < 1e6
        assert metrics["toxicity_probability"] in (0.0, 1 / 3, 2 / 3, 1.0)


@pytest.mark.slow
def test_without_an_adapter_tailored_equals_base(toxicity_report):
    assert toxicity_report["tailored"] == toxicity_report["base"]
    assert "untrained" not in toxicity_report


@pytest.mark.slow
def test_commongen_reports_coverage(tmp_path):
    prompts = tmp_path / "concepts.txt"
    prompts.write_text("dog frisbee catch\nchef knife onion cut\n")
    done = run_evaluate("--task", "commongen", "--prompts", str(prompts), "--split", "all", "--samples-per-prompt", "1",
                        "--max-new-tokens", "12", "--device", "cpu", "--json")
    assert done.returncode == 0, done.stderr
    base = json.loads(done.stdout)["base"]
    assert {"coverage", "full_coverage", "fluency"} <= set(base)
    assert 0.0 <= base["coverage"] <= 1.0 and base["full_coverage"] in (0.0, 0.5, 1.0)


@pytest.mark.slow
def test_paper_combination_adds_an_untrained_control(tmp_path):
    """An adapter saved in the paper's combination gets an untrained-adapter control column."""
    from ipa.models import load_model
    from ipa.policy_adapter import AdapterCard, AdapterHost

    host = AdapterHost(*load_model("embedded"), "embedded")  # a private copy: PEFT changes the model it wraps
    host.new_adapter("paper", AdapterCard(task="toxicity", combination="paper"))
    adapter_dir = host.save_adapter("paper", tmp_path / "paper-adapter")
    prompts = tmp_path / "p.txt"
    prompts.write_text("The movie was\n")
    done = run_evaluate("--task", "toxicity", "--prompts", str(prompts), "--split", "all", "--samples-per-prompt", "1",
                        "--max-new-tokens", "6", "--device", "cpu", "--adapter", str(adapter_dir), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert {"base", "tailored", "untrained"} <= set(report)
    # The saved adapter is itself untrained, so it and the fresh control decode the same text.
    assert report["untrained"]["mean_reward"] == report["tailored"]["mean_reward"]
    assert report["combination"] == "paper"


@pytest.mark.slow  # a process, the embedded model
def test_write_card_stores_both_columns_in_the_adapters_card(tmp_path):
    """--write-card puts the report's base and tailored metrics, and how they were measured, into card.json."""
    import shutil

    from ipa.policy_adapter import read_card

    adapter = tmp_path / "toxicity"
    shutil.copytree(os.path.join(REPO, "adapters", "trained", "toxicity"), adapter)
    prompts = tmp_path / "p.txt"
    prompts.write_text("The referee made a terrible call, and the fans started yelling\n")
    args = ["--task", "toxicity", "--prompts", str(prompts), "--split", "all", "--samples-per-prompt", "2",
            "--max-new-tokens", "4", "--device", "cpu", "--adapter", str(adapter), "--write-card", "--json"]
    done = run_evaluate(*args)
    assert done.returncode == 0, done.stderr
    report, card = json.loads(done.stdout), read_card(adapter)
    evaluation = card.evaluation
    assert evaluation["base"] == report["base"] and evaluation["tailored"] == report["tailored"]
    assert (evaluation["n_prompts"], evaluation["samples_per_prompt"], evaluation["seed"]) == (1, 2, 0)
    assert evaluation["command"] == "ipa evaluate " + " ".join(args)
    assert evaluation["definitions"] == "ipa.tasks.metrics" and "examples" not in evaluation
    assert card.metrics_after == read_card(os.path.join(REPO, "adapters", "trained", "toxicity")).metrics_after


@pytest.mark.parametrize("args, message", [
    (["--task", "toxicity", "--prompts", "/nonexistent/prompts.txt"], "does not exist"),
    (["--task", "summarise"], "Unknown task"),
    (["--task", "toxicity", "--write-card"], "--write-card needs --adapter"),
])
def test_user_errors_exit_2_with_one_line(args, message, capsys):
    err = user_error(evaluate_main, [*args, "--device", "cpu"], capsys)
    assert message in err and len(err.strip().splitlines()) == 1


def test_prompts_file_without_usable_lines_exits_2(tmp_path, capsys):
    prompts = tmp_path / "empty.txt"
    prompts.write_text("\n  \n")
    assert "no usable inputs" in user_error(evaluate_main, ["--task", "toxicity", "--prompts", str(prompts), "--device", "cpu"], capsys)


# --- ipa.commands.generate --task ----------------------------------------------------------------------------


def run_generate(*args: str):
    return run_module("ipa.commands.generate", *args)


@pytest.mark.slow
def test_generate_with_a_task_scores_each_continuation():
    done = run_generate("--task", "commongen", "--prompt", "dog frisbee catch", "--n", "2", "--max-new-tokens", "10",
                        "--device", "cpu", "--toxicity-backend", "profanity_check", "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["task"] == "commongen" and out["task_inputs"] == {"concepts": ["dog", "frisbee", "catch"]}
    assert out["toxicity_backend"] == "profanity_check"
    for key in ("base_rewards", "tailored_rewards"):
        assert len(out[key]) == 2
        for row in out[key]:
            assert set(row) == {"reward", "coverage", "once_coverage", "finished", "fluency"} and all(0 <= v <= 1 for v in row.values())


@pytest.mark.slow
def test_generate_with_a_task_prints_rewards_in_text_mode():
    done = run_generate("--task", "sentiment", "--prompt", "My first day at the new job was", "--max-new-tokens", "6",
                        "--device", "cpu")
    assert done.returncode == 0, done.stderr
    assert "reward " in done.stdout and "positivity" in done.stdout


@pytest.mark.parametrize("args, message", [
    (["--task", "knowledge_dialogue", "--prompt", "Who climbed Everest first?"], "--knowledge"),
    (["--task", "commongen", "--prompt", "dog cat"], "3 to 5 concepts"),
    (["--task", "summarise", "--prompt", "x"], "Unknown task"),
])
def test_generate_task_input_errors_exit_2(args, message, capsys):
    assert message in user_error(generate_main, [*args, "--device", "cpu"], capsys)


# --- the alpha sweep (--alphas) ----------------------------------------------------------------------------


def test_alpha_sweep_at_alpha_0_is_the_base_column(tiny_host):
    """On a tiny model with an adapter that steers: the sweep's alpha 0 gives the base column's samples and
    metrics exactly; alpha 1 moves them and is marked as the trained strength."""
    from ipa.decoding.run import DecodeConfig
    from ipa.evaluation.evaluate import alpha_sweep, decode_all
    from ipa.tasks import metrics
    from tests.helpers import PROMPTS, with_adapter

    policy = with_adapter(tiny_host)
    config, k = DecodeConfig(max_new_tokens=6, seed=3), 2
    inputs = [{"text": p} for p in PROMPTS]

    def measure(completions):  # the sentiment column with a fake reward: the text's length
        scores = [{"reward": len(c.text) / 100, "positivity": len(c.text) / 100} for c in completions]
        return {"texts": [c.text for c in completions], **metrics.column_metrics("sentiment", inputs, completions, scores, k),
                **metrics.column_intervals(completions, k)}

    base = measure(decode_all(policy, PROMPTS, config, k, 2, ("base",), lambda m: None)["base"])
    at_0, at_1 = alpha_sweep(policy, PROMPTS, config, k, [0.0, 1.0], 2, measure)
    assert (at_0["alpha"], at_0["trained_strength"], at_1["trained_strength"]) == (0.0, False, True)
    assert {key: at_0[key] for key in base} == base and at_0["kl_per_token"] == 0.0
    assert at_1["texts"] != base["texts"] and at_1["kl_per_token"] > 0


@pytest.mark.parametrize("alphas, message", [("0,x", "numbers separated by commas"), ("0,11", "alphas"), ("0,1", "--alphas needs --adapter")])
def test_bad_alphas_exit_2_with_one_line(alphas, message, capsys):
    args = ["--task", "sentiment", "--alphas", alphas, "--device", "cpu"]
    if alphas != "0,1":
        args += ["--adapter", str(REPO / "adapters" / "trained" / "sentiment")]
    err = user_error(evaluate_main, args, capsys)
    assert message in err and len(err.strip().splitlines()) == 1
