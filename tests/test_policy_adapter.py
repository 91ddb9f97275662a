"""Adapters on disk: exact round trips, size, and clear errors for missing, corrupt or mismatched ones."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import save_file

from ipa.loading import attach_adapter
from ipa.models import ModelLoadError, check_same_tokenizer, resolve_model_path
from ipa.policy_adapter import AdapterCard, AdapterError, AdapterHost, read_card, update_card
from ipa.decoding.run import DecodeConfig
from ipa.decoding.engine import generate
from tests.helpers import PROMPTS, perturb_lora, tiny_llama, tiny_tokenizer


def lora_state(host: AdapterHost, name: str) -> dict[str, torch.Tensor]:
    return {k.replace(f".{name}.", ".X."): v.clone() for k, v in host.peft.state_dict().items() if f".{name}." in k}


def test_save_load_round_trips_exactly(tiny_host, tmp_path, tokenizer):
    tiny_host.new_adapter("steer", AdapterCard(task="toxicity", n_reward_tokens=5, alpha=0.8, training={"lr": 1e-4}))
    perturb_lora(tiny_host, "steer")
    with torch.no_grad():
        tiny_host.reward_embeddings["steer"].normal_()
    tiny_host.save_adapter("steer", tmp_path / "steer")
    assert sorted(os.listdir(tmp_path / "steer")) == ["adapter_config.json", "adapter_model.safetensors", "card.json", "reward_tokens.safetensors"]

    other = AdapterHost(tiny_llama(tokenizer), tokenizer, "tiny")
    card = other.load_adapter("copy", tmp_path / "steer")
    assert card.task == "toxicity" and card.alpha == 0.8 and card.training == {"lr": 1e-4} and card.n_reward_tokens == 5
    saved, loaded = lora_state(tiny_host, "steer"), lora_state(other, "copy")
    assert saved.keys() == loaded.keys() and len(saved) > 0
    assert all(torch.equal(saved[k], loaded[k]) for k in saved)
    assert torch.equal(tiny_host.reward_embeddings["steer"], other.reward_embeddings["copy"])
    config = DecodeConfig(max_new_tokens=8, seed=1)
    from ipa.decoding.run import TailoredPolicy
    a = generate(TailoredPolicy(tiny_host, tiny_host, "steer"), PROMPTS, config)
    b = generate(TailoredPolicy(other, other, "copy"), PROMPTS, config)
    assert [c.token_ids for c in a.tailored] == [c.token_ids for c in b.tailored]


def test_loading_never_unpickles(tmp_path, tiny_host):
    """A directory with PyTorch pickles instead of safetensors is refused, not loaded."""
    tiny_host.new_adapter("steer", AdapterCard())
    tiny_host.save_adapter("steer", tmp_path / "steer")
    os.remove(tmp_path / "steer" / "adapter_model.safetensors")
    torch.save({"x": torch.zeros(1)}, tmp_path / "steer" / "adapter_model.bin")
    with pytest.raises(AdapterError, match="adapter_model.safetensors is missing"):
        tiny_host.load_adapter("evil", tmp_path / "steer")


@pytest.mark.slow
def test_embedded_adapter_is_under_ten_megabytes(embedded_host, tmp_path):
    host = embedded_host
    try:
        host.new_adapter("size", AdapterCard(n_reward_tokens=5))
        directory = host.save_adapter("size", tmp_path / "size")
        total = sum(os.path.getsize(directory / f) for f in os.listdir(directory))
        assert 1_000_000 < total <= 10_000_000
    finally:
        host.delete_adapter("size")


@pytest.mark.parametrize("break_it, message", [
    (lambda d: None, "does not exist"),
    (lambda d: d.mkdir(), "has no card.json"),
    (lambda d: (d.mkdir(), (d / "card.json").write_text("{not json")), "corrupt"),
    (lambda d: (d.mkdir(), (d / "card.json").write_text("[1, 2]")), "corrupt"),
])
def test_missing_or_corrupt_directories(tmp_path, tiny_host, break_it, message):
    directory = tmp_path / "adapter"
    break_it(directory)
    with pytest.raises(AdapterError, match=message):
        tiny_host.load_adapter("x1", directory)


SHIPPED_CARD = os.path.join(os.path.dirname(__file__), "..", "adapters", "trained", "toxicity", "card.json")


@pytest.mark.parametrize("change, message", [
    ({"task": "../../etc"}, "task must be a name of 1 to 64 letters"),
    ({"task": 3}, "task must be a name"),
    ({"alpha": float("nan")}, "alpha must be a number from 0 to 10, got nan"),
    ({"alpha": float("inf")}, "alpha must be a number from 0 to 10, got inf"),
    ({"alpha": "1.0"}, "alpha must be a number from 0 to 10, got str '1.0'"),
    ({"algorithm": "<b>pg</b>"}, "Unknown algorithm '<b>pg</b>'"),
    ({"combination": None}, "Unknown combination None"),
    ({"steps": 2.5}, "steps must be a whole number"),
    ({"lora_r": 10**6}, "lora_r must be a whole number from 1 to 256"),
    ({"machine": "x" * 2001}, "machine must be text of at most 2,000 characters, got 2,001 characters"),
    ({"machine": "GPU\n# Log in again"}, "machine must be one line of text"),
    ({"created": ["2026"]}, "created must be text"),
    ({"format_version": 2}, "format_version 2 is not one this project reads"),
    ({"training": []}, "training must be a JSON object"),
    ({"training": {"run": {"out": "y" * 2001}}}, "training.run.out must be text of at most 2,000 characters"),
    ({"training": {"lr": float("-inf")}}, "training.lr must be a finite number"),
    ({"evaluation": {"n_prompts": "<img src=x>"}}, "evaluation.n_prompts must be a whole number"),
    ({"metrics_after": {"mean_reward": "0.9"}}, "metrics_after.mean_reward must be a number or null"),
    ({"init_fingerprint": {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": 1}}}}}}}}}}, "nested more than 8 deep"),
])
def test_a_card_is_checked_field_by_field_when_read(tmp_path, change, message):
    """Types, ranges, known values and lengths: one AdapterError naming the field (JSON's NaN and Infinity too)."""
    card = {**json.load(open(SHIPPED_CARD)), **change}
    (tmp_path / "card.json").write_text(json.dumps(card))
    with pytest.raises(AdapterError, match="card.json is not a valid adapter card: ") as caught:
        read_card(tmp_path)
    assert message in str(caught.value) and len(str(caught.value)) < 600


def test_a_card_too_large_to_read_and_a_card_never_written_invalid(tmp_path, tiny_host):
    (tmp_path / "card.json").write_text(json.dumps({**json.load(open(SHIPPED_CARD)), "training": {"x": "y" * 300_000}}))
    with pytest.raises(AdapterError, match="card.json is 29[0-9] KB; an adapter's card is at most 256 KB"):
        read_card(tmp_path)
    tiny_host.new_adapter("steer", AdapterCard(task="toxicity"))
    tiny_host.cards["steer"].metrics_after = {"mean_reward": float("nan")}
    with pytest.raises(AdapterError, match="metrics_after.mean_reward must be a finite number, got nan"):
        tiny_host.save_adapter("steer", tmp_path / "steer")
    assert not (tmp_path / "steer").exists()
    (tmp_path / "card.json").write_text(open(SHIPPED_CARD).read())
    with pytest.raises(AdapterError, match="evaluation.seed must be a finite number"):
        update_card(tmp_path, evaluation={"seed": float("nan")})
    assert (tmp_path / "card.json").read_text() == open(SHIPPED_CARD).read()


def test_corrupt_weights_and_incomplete_adapters(tmp_path, tiny_host, tokenizer):
    tiny_host.new_adapter("steer", AdapterCard())
    directory = tiny_host.save_adapter("steer", tmp_path / "steer")
    other = AdapterHost(tiny_llama(tokenizer), tokenizer, "tiny")
    (directory / "adapter_model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(AdapterError, match="corrupt"):
        other.load_adapter("x1", directory)
    save_file({"nothing": torch.zeros(2)}, directory / "adapter_model.safetensors")
    with pytest.raises(AdapterError, match="does not fit"):
        other.load_adapter("x2", directory)
    assert other.adapter_names == []  # a failed load leaves nothing behind
    os.remove(directory / "adapter_config.json")
    with pytest.raises(AdapterError, match="adapter_config.json is missing"):
        other.load_adapter("x3", directory)


def test_adapter_for_another_model_is_refused(tmp_path, tiny_host, tokenizer):
    tiny_host.new_adapter("steer", AdapterCard())
    tiny_host.save_adapter("steer", tmp_path / "steer")
    bigger = AdapterHost(tiny_llama(tokenizer, hidden=48), tokenizer, "tiny-48")
    with pytest.raises(AdapterError, match="was made for 'tiny'.*hidden_size 32.*hidden_size 48"):
        bigger.load_adapter("steer", tmp_path / "steer")


def test_tokenizer_mismatch_names_both_models(tokenizer, tmp_path):
    other = tiny_tokenizer()
    check_same_tokenizer(tokenizer, "tiny", other, "copy")  # another object, the same vocabulary: fine
    other.add_tokens(["<new-token>"])
    with pytest.raises(ModelLoadError, match="'big-base'.*'small-adapter'.*different tokenizers"):
        check_same_tokenizer(tokenizer, "big-base", other, "small-adapter")


def test_attach_adapter_with_a_separate_initial_model(tmp_path, tokenizer):
    small = AdapterHost(tiny_llama(tokenizer, seed=3), tokenizer, "tiny-small")
    small.new_adapter("steer", AdapterCard())
    small.save_adapter("steer", tmp_path / "steer")
    base = AdapterHost(tiny_llama(tokenizer, seed=0, hidden=48), tokenizer, "tiny-base")
    fresh_small = AdapterHost(tiny_llama(tokenizer, seed=3), tokenizer, "tiny-small")
    policy = attach_adapter(base, tmp_path / "steer", adapter_host=fresh_small)
    assert not policy.shares_weights and policy.adapter_name == "steer"
    assert read_card(tmp_path / "steer").adapter_init_model == "tiny-small"


def test_model_paths_give_clear_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        resolve_model_path("./no/such/model")
    with pytest.raises(ModelLoadError, match="no config.json"):
        resolve_model_path(str(tmp_path))
    with pytest.raises(ModelLoadError, match="No model named"):
        resolve_model_path("  ")
    assert os.path.isfile(os.path.join(resolve_model_path("embedded"), "model.safetensors"))


def test_card_rejects_unknown_combination():
    with pytest.raises(AdapterError, match="combination"):
        AdapterCard(combination="sum")
    assert json.loads(json.dumps(AdapterCard().__dict__))["combination"] == "residual"


def test_an_evaluation_is_written_into_a_card_and_old_cards_still_load(tmp_path):
    """Cards written before the `evaluation` field load with it empty; update_card adds it and keeps the rest."""
    shipped = json.loads(open(os.path.join(os.path.dirname(__file__), "..", "adapters", "trained", "toxicity", "card.json")).read())
    old = {k: v for k, v in shipped.items() if k != "evaluation"}
    (tmp_path / "card.json").write_text(json.dumps(old))
    assert read_card(tmp_path).evaluation == {} and read_card(tmp_path).metrics_after == old["metrics_after"]
    evaluation = {"n_prompts": 2, "samples_per_prompt": 3, "base": {"mean_reward": 0.5}, "tailored": {"mean_reward": 0.75}}
    card = update_card(tmp_path, evaluation=evaluation)
    assert card.evaluation == evaluation == read_card(tmp_path).evaluation
    assert json.loads((tmp_path / "card.json").read_text()) == {**old, "evaluation": evaluation}
    assert os.listdir(tmp_path) == ["card.json"]  # the temporary file was renamed
    with pytest.raises(AdapterError, match="Unknown card fields: evalution"):
        update_card(tmp_path, evalution={})
    with pytest.raises(AdapterError, match="combination"):
        update_card(tmp_path, combination="sum")
    assert read_card(tmp_path).combination == "residual"
    with pytest.raises(AdapterError, match="no card.json"):
        update_card(tmp_path / "..", evaluation={})


def test_base_only_switches_every_adapter_off_and_leaves_training_flags(tiny_host, tokenizer):
    plain = tiny_llama(tokenizer)  # the same seed: the same weights as tiny_host's model
    tiny_host.new_adapter("steer", AdapterCard())
    perturb_lora(tiny_host, "steer")
    tiny_host.set_trainable("steer", True)
    ids = tokenizer("A short test", return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        with tiny_host.base_only() as base:
            off = base(ids).logits
        with tiny_host.only("steer") as adapted:
            on = adapted(ids).logits
        expected = plain(ids).logits
    assert torch.equal(off, expected) and not torch.allclose(on, expected)
    assert all(p.requires_grad for p in tiny_host.trainable_parameters("steer"))
