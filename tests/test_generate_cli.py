"""`python -m ipa.commands.generate` as a user runs it: real embedded model, JSON output, exit codes."""

from __future__ import annotations

import json
import os

import pytest

from ipa.commands.generate import main as generate_main
from ipa.policy_adapter import AdapterCard
from tests.helpers import perturb_lora, run_module, save_tiny_model


def run_cli(*args: str):
    return run_module("ipa.commands.generate", *args)


@pytest.fixture(scope="module")
def saved_adapter(embedded_host, tmp_path_factory):
    host = embedded_host
    host.new_adapter("cli", AdapterCard(task="custom", alpha=1.0))
    perturb_lora(host, "cli", scale=0.02)
    directory = host.save_adapter("cli", tmp_path_factory.mktemp("adapters") / "cli")
    host.delete_adapter("cli")
    return directory


@pytest.mark.slow
def test_json_output_with_an_adapter(saved_adapter):
    out = run_cli("--prompt", "The best thing about weekends is", "--adapter", str(saved_adapter), "--n", "2",
                  "--max-new-tokens", "12", "--seed", "3", "--json", "--device", "cpu")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert len(data["base"]) == 2 and len(data["tailored"]) == 2
    assert all(isinstance(t, str) and t.strip() for t in data["base"] + data["tailored"])
    assert data["base"] != data["tailored"]  # the perturbed adapter steers


@pytest.mark.slow
def test_alpha_zero_columns_match(saved_adapter):
    out = run_cli("--prompt", "Hello there", "--adapter", str(saved_adapter), "--alpha", "0", "--max-new-tokens", "8", "--json")
    data = json.loads(out.stdout)
    assert data["base"] == data["tailored"]


@pytest.fixture(scope="module")
def second_adapter(embedded_host, tmp_path_factory):
    host = embedded_host
    host.new_adapter("cli2", AdapterCard(task="custom", alpha=0.5))
    perturb_lora(host, "cli2", scale=0.02, seed=2)
    directory = host.save_adapter("cli2", tmp_path_factory.mktemp("adapters") / "cli2")
    host.delete_adapter("cli2")
    return directory


@pytest.mark.slow  # the embedded model, processes
def test_composed_adapters_and_a_second_at_alpha_zero(saved_adapter, second_adapter):
    common = ("--prompt", "The best thing about weekends is", "--max-new-tokens", "10", "--seed", "3", "--json")
    single = json.loads(run_cli(*common, "--adapter", str(saved_adapter), "--alpha", "1").stdout)
    off = run_cli(*common, "--adapter", str(saved_adapter), "--alpha", "1", "--adapter", str(second_adapter), "--alpha", "0")
    assert off.returncode == 0, off.stderr
    off = json.loads(off.stdout)
    assert off["tailored"] == single["tailored"] and off["base"] == single["base"]
    assert off["adapters"] == [{"adapter": str(saved_adapter), "alpha": 1.0}, {"adapter": str(second_adapter), "alpha": 0.0}]
    both = json.loads(run_cli(*common, "--adapter", str(saved_adapter), "--adapter", str(second_adapter)).stdout)
    assert [a["alpha"] for a in both["adapters"]] == [1.0, 0.5]  # without --alpha: each adapter's card
    assert both["tailored"] != single["tailored"] and both["base"] == single["base"]


@pytest.mark.slow  # processes
def test_composing_adapters_of_different_bases_or_unpaired_alphas_is_refused(tmp_path, saved_adapter, second_adapter):
    other = tmp_path / "other"
    other.mkdir()
    for f in os.listdir(second_adapter):
        (other / f).write_bytes((second_adapter / f).read_bytes())
    card = json.loads((other / "card.json").read_text())
    (other / "card.json").write_text(json.dumps({**card, "base_model": "HuggingFaceTB/SmolLM2-1.7B"}))
    out = run_cli("--prompt", "hi", "--adapter", str(saved_adapter), "--adapter", str(other))
    assert out.returncode == 2 and "must steer the same base" in out.stderr and "Traceback" not in out.stderr
    out = run_cli("--prompt", "hi", "--adapter", str(saved_adapter), "--adapter", str(second_adapter), "--alpha", "1")
    assert out.returncode == 2 and "one --alpha per --adapter" in out.stderr
    out = run_cli("--prompt", "hi", "--adapter", str(saved_adapter), "--adapter", str(second_adapter), "--alpha", "1", "--alpha", "12")
    assert out.returncode == 2 and "alpha must be a number from 0 to 10, got 12" in out.stderr


@pytest.mark.slow
def test_text_output_names_both_columns():
    out = run_cli("--prompt", "Once upon a time", "--max-new-tokens", "6")
    assert out.returncode == 0, out.stderr
    assert "== base ==" in out.stdout and "[1]" in out.stdout


@pytest.mark.parametrize("args, message", [
    (["--prompt", "   "], "prompt is empty"),
    (["--prompt", "hi", "--alpha", "10.5"], "alpha must be a number from 0 to 10, got 10.5"),
    (["--prompt", "hi", "--alpha", "nan"], "alpha must be a number from 0 to 10, got nan"),
    (["--prompt", "hi", "--top-p", "0"], "top_p must be a number from 0.001 to 1, got 0"),
    (["--prompt", "hi", "--adapter", "/no/such/adapter"], "does not exist"),
    (["--prompt", "hi", "--n", "0"], "--n must be a whole number of at least 1, got 0"),
])
def test_user_errors_exit_2(args, message, capsys):
    """Each fails before a model loads; main() in this process (the real command line: the next test)."""
    with pytest.raises(SystemExit) as exit_:
        generate_main(args)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.slow  # a process
def test_a_user_error_exits_2_with_one_line_and_no_traceback():
    out = run_cli("--prompt", "   ")
    assert out.returncode == 2
    assert out.stderr.startswith("error: The prompt is empty") and len(out.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_corrupt_adapter_and_adapter_for_another_base(tmp_path, saved_adapter):
    (tmp_path / "card.json").write_text("{")
    out = run_cli("--prompt", "hi", "--adapter", str(tmp_path))
    assert out.returncode == 2 and "corrupt" in out.stderr and "Traceback" not in out.stderr
    other = tmp_path / "other"
    other.mkdir()
    card = json.loads((saved_adapter / "card.json").read_text())
    card["init_fingerprint"]["hidden_size"] = 2048
    card["adapter_init_model"] = "embedded"
    for f in os.listdir(saved_adapter):
        (other / f).write_bytes((saved_adapter / f).read_bytes())
    (other / "card.json").write_text(json.dumps(card))
    out = run_cli("--prompt", "hi", "--adapter", str(other))
    assert out.returncode == 2 and "was made for" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.slow  # a process
def test_long_prompt_is_truncated_and_said(tmp_path, tokenizer):
    """On a tiny model (a window of 128 tokens): the embedded model's 8,192 took a minute of prefill on 2 cores."""
    tiny = save_tiny_model(tmp_path / "tiny", tokenizer)
    out = run_cli("--base", tiny, "--prompt", "word " * 300, "--max-new-tokens", "2", "--json", "--device", "cpu")
    assert out.returncode == 0, out.stderr
    assert "kept its last 126 tokens" in out.stderr


@pytest.mark.slow  # a process, the real tokenizer's special tokens
def test_special_tokens_in_a_task_prompt_stay_text(embedded_tokenizer):
    from tests.helpers import INJECTION, special_counts, typed_with_every_special_token
    from ipa.tasks import TASKS, WORD_JOINER

    tokenizer = embedded_tokenizer
    typed = typed_with_every_special_token(tokenizer)
    out = run_cli("--task", "dialogue_safety", "--prompt", typed, "--max-new-tokens", "2", "--json", "--device", "cpu",
                  "--toxicity-backend", "profanity_check")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    template_only = TASKS["dialogue_safety"].build_prompt({"message": "Hello"}, tokenizer)
    assert special_counts(tokenizer, data["model_prompt"]) == special_counts(tokenizer, template_only)
    assert INJECTION in data["model_prompt"].replace(WORD_JOINER, "") and data["task_inputs"]["message"] == typed
