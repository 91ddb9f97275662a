"""Tailored decoding: equivalences with Hugging Face generate, the reference loop (ipa.decoding.reference), batching,
caching, combinations."""

from __future__ import annotations

import pytest
import torch

from ipa.errors import UserError
from ipa.policy_adapter import AdapterCard, AdapterHost
from ipa.decoding.policy_math import compose_logits, filter_logits, next_tokens, sample_coupled
from ipa.decoding.run import DecodeConfig, DecodeError, TailoredPolicy
from ipa.decoding.engine import decode_steps, generate, sample
from tests.helpers import PROMPTS, assert_engine_matches_reference, composed, perturb_lora, tiny_llama, with_adapter


def combine_logits(base, adapter, init, alpha, combination="residual"):
    """One adapter's product of experts: compose_logits with a single term."""
    return compose_logits(base, [adapter], init, [alpha], combination)


def hf_greedy(model, tokenizer, prompt: str, max_new_tokens: int) -> list[int]:
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    return out[0, ids["input_ids"].shape[1]:].tolist()


def generated_ids(completion) -> list[int]:
    return completion.token_ids


# --- pure functions ---------------------------------------------------------------------------------


def test_the_combination_forms_with_one_adapter():
    base = torch.randn(3, 11)
    adapter = torch.randn(3, 11)
    init = torch.randn(3, 11)
    base_lp = torch.log_softmax(base, -1)
    assert torch.equal(combine_logits(base, adapter, init, 0.0, "paper"), base_lp)
    assert torch.equal(combine_logits(base, adapter, init, 0.0, "residual"), base_lp)
    assert torch.allclose(combine_logits(base, adapter, init, 2.0, "paper"), base_lp + 2 * adapter)
    assert torch.allclose(combine_logits(base, adapter, init, 0.5, "residual"), base_lp + 0.5 * (adapter - init))
    # A residual adapter equal to its initial model leaves the base untouched at any strength.
    assert torch.equal(combine_logits(base, adapter, adapter, 7.0, "residual"), base_lp)


def test_filter_logits_top_k_and_top_p():
    logprobs = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    top_k = filter_logits(logprobs, 1.0, 2, 1.0)
    assert torch.isinf(top_k[0, 2:]).all() and torch.isfinite(top_k[0, :2]).all()
    top_p = filter_logits(logprobs, 1.0, 0, 0.7)  # 0.5 + 0.3 reaches 0.7: two tokens stay
    assert torch.isfinite(top_p[0, :2]).all() and torch.isinf(top_p[0, 2:]).all()
    assert torch.isfinite(filter_logits(logprobs, 1.0, 0, 0.01)[0, 0])  # the top token always stays


@pytest.mark.parametrize("scale", [0.1, 1.0, 3.0, 10.0])  # flat to peaked: nuclei of 2 to 40,000 tokens
def test_top_p_finds_the_nucleus_a_full_sort_finds(scale):
    torch.manual_seed(0)
    logprobs = torch.log_softmax(torch.randn(8, 49152) * scale, dim=-1)
    for top_p in (0.5, 0.9, 0.99):
        kept = torch.isfinite(filter_logits(logprobs, 1.0, 0, top_p))
        sorted_lp, order = torch.sort(logprobs, dim=-1, descending=True)
        sorted_p = sorted_lp.exp()
        reference = torch.zeros_like(kept).scatter(-1, order, (sorted_p.cumsum(-1) - sorted_p) < top_p)
        # the same tokens, up to float rounding at the nucleus's last token
        assert ((kept ^ reference).sum(dim=-1) <= 1).all()
        mass = (logprobs.exp() * kept).sum(dim=-1)
        smallest_kept = logprobs.exp().masked_fill(~kept, 1.0).min(dim=-1).values
        assert (mass >= top_p - 1e-4).all() and (mass - smallest_kept < top_p + 1e-4).all()  # reaches top_p, minimal


def test_sample_coupled_follows_the_distribution_and_couples_rows():
    probs = torch.tensor([0.1, 0.6, 0.3])
    uniforms = torch.linspace(0.001, 0.999, 1000)
    tokens = sample_coupled(probs.log().expand(1000, -1), uniforms)
    freq = torch.bincount(tokens, minlength=3).float() / 1000
    assert torch.allclose(freq, probs, atol=0.01)
    # The same distribution and the same uniform give the same token.
    pair = sample_coupled(probs.log().expand(2, -1), torch.tensor([0.42, 0.42]))
    assert pair[0] == pair[1]


def test_sample_coupled_never_picks_a_removed_token():
    logits = torch.tensor([[0.0, float("-inf"), 0.0, float("-inf")]]).expand(200, -1)
    tokens = sample_coupled(logits, torch.rand(200))
    assert set(tokens.tolist()) <= {0, 2}


@pytest.mark.parametrize("scale", [0.1, 3.0, 10.0])
def test_a_draw_over_the_nucleus_alone_is_the_draw_over_the_whole_vocabulary(scale):
    """next_tokens draws among top-p's tokens only (policy_math._sample_kept): the token sample_coupled draws from the
    whole filtered vocabulary, for every uniform, at a row's end (almost 1) too."""
    torch.manual_seed(1)
    logprobs = torch.log_softmax(torch.randn(6, 49152) * scale, dim=-1).repeat(50, 1)
    uniforms = torch.cat([torch.tensor([0.0] * 6 + [1 - 1e-12] * 6), torch.rand(288)])
    config = DecodeConfig(temperature=0.7, top_p=0.9)
    tokens, _, filtered = next_tokens(logprobs, config, 3, [], uniforms)
    assert torch.equal(tokens[6:], sample_coupled(filtered[6:], uniforms[6:]))
    assert torch.isfinite(filtered.gather(-1, tokens[:, None])).all()
    # uniform 0: the first possible token in vocabulary order (sample_coupled lands on a removed token there, then
    # falls back to the most likely one)
    assert torch.equal(tokens[:6], torch.isfinite(filtered[:6]).int().argmax(dim=-1))


# --- equivalences ------------------------------------------------------------------------------------


def test_alpha_zero_greedy_equals_hf_generate_tiny(tiny_host):
    policy = with_adapter(tiny_host)
    config = DecodeConfig(max_new_tokens=12, temperature=0, alpha=0.0)
    for prompt in PROMPTS:
        result = generate(policy, [prompt], config)
        with tiny_host.base_only() as base_model:  # PEFT injects LoRA into the model in place
            expected = hf_greedy(base_model, tiny_host.tokenizer, prompt, 12)
        assert generated_ids(result.base[0]) == expected
        assert generated_ids(result.tailored[0]) == expected


@pytest.mark.slow
def test_alpha_zero_greedy_equals_hf_generate_embedded(embedded, embedded_host):
    """The real model: our loop at alpha = 0 (adapter loaded, paper form) picks generate's tokens."""
    model, tokenizer = embedded
    host = embedded_host
    try:
        policy = with_adapter(host, "alpha0", combination="paper")
        prompt = "The three primary colours are"
        expected = hf_greedy(model, tokenizer, prompt, 16)
        result = generate(policy, [prompt], DecodeConfig(max_new_tokens=16, temperature=0, alpha=0.0))
        assert generated_ids(result.tailored[0]) == expected
        assert generated_ids(result.base[0]) == expected
        assert "red" in result.base[0].text.lower() or "blue" in result.base[0].text.lower()
    finally:
        host.delete_adapter("alpha0")


@pytest.mark.parametrize("combination", ["residual", "paper"])
def test_alpha_zero_sampling_gives_identical_columns(tiny_host, combination):
    policy = with_adapter(tiny_host, combination=combination)
    result = generate(policy, PROMPTS, DecodeConfig(max_new_tokens=10, alpha=0.0, seed=3), n=2)
    assert [c.token_ids for c in result.base] == [c.token_ids for c in result.tailored]


def test_untrained_residual_adapter_reproduces_the_base_at_any_alpha(tiny_host):
    policy = with_adapter(tiny_host, trained=False)
    for alpha in (0.5, 10.0):
        for config in (DecodeConfig(max_new_tokens=10, temperature=0, alpha=alpha),
                       DecodeConfig(max_new_tokens=10, alpha=alpha, seed=5)):
            result = generate(policy, PROMPTS, config, n=2)
            assert [c.token_ids for c in result.base] == [c.token_ids for c in result.tailored]
            for c in result.tailored:
                assert c.tailored_logprobs == pytest.approx(c.base_logprobs, abs=1e-5)


def test_paper_combination_with_a_silent_adapter_sharpens_the_base(tiny_host):
    """Zero LoRA, no reward token: tailored = log_softmax(base) + alpha · base logits."""
    alpha = 0.7
    policy = with_adapter(tiny_host, combination="paper", trained=False)
    batch = sample(policy, PROMPTS[:1], DecodeConfig(max_new_tokens=6, alpha=alpha, seed=0))
    prompt_ids = batch.prompt_ids[0]
    ids = torch.tensor([prompt_ids + batch.completion_ids[0].tolist()])
    with torch.no_grad():
        logits = tiny_host.base_model(ids).logits[0, len(prompt_ids) - 1:-1]
    expected = torch.log_softmax(torch.log_softmax(logits, -1) + alpha * logits, -1)
    chosen = expected.gather(-1, batch.completion_ids[0].unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(batch.tailored_logprobs[0], chosen, atol=1e-4)
    assert not torch.allclose(batch.tailored_logprobs[0], batch.base_logprobs[0], atol=1e-3)


def test_trained_adapter_changes_the_tailored_column_only(tiny_host):
    policy = with_adapter(tiny_host)
    config = DecodeConfig(max_new_tokens=12, temperature=0, alpha=1.0)
    result = generate(policy, PROMPTS, config)
    with tiny_host.base_only() as base_model:
        for prompt, base in zip(PROMPTS, result.base):
            assert base.token_ids == hf_greedy(base_model, tiny_host.tokenizer, prompt, 12)
    assert any(b.token_ids != t.token_ids for b, t in zip(result.base, result.tailored))
    assert max(max(c.kl) for c in result.tailored) > 0.01
    assert all(max(c.kl) == 0 for c in result.base)


def test_batched_equals_one_by_one(tiny_host):
    policy = with_adapter(tiny_host)
    config = DecodeConfig(max_new_tokens=10, temperature=0, alpha=1.5)
    together = generate(policy, PROMPTS, config)
    for i, prompt in enumerate(PROMPTS):
        alone = generate(policy, [prompt], config)
        assert alone.base[0].token_ids == together.base[i].token_ids
        assert alone.tailored[0].token_ids == together.tailored[i].token_ids
        assert alone.tailored[0].tailored_logprobs == pytest.approx(together.tailored[i].tailored_logprobs, abs=1e-4)


def test_cached_equals_recomputed_logits(tiny_host):
    """The KV-cached loop's log-probabilities match a full forward over prompt + completion."""
    policy = with_adapter(tiny_host)
    alpha = 1.3
    batch = sample(policy, PROMPTS, DecodeConfig(max_new_tokens=8, alpha=alpha, seed=2))
    for s, prompt_ids in enumerate(batch.prompt_ids):
        length = int(batch.completion_mask[s].sum())
        completion = batch.completion_ids[s, :length].tolist()
        ids = torch.tensor([prompt_ids + completion])
        positions = slice(len(prompt_ids) - 1, len(prompt_ids) - 1 + length)
        with torch.no_grad(), tiny_host.base_only() as base:
            base_logits = base(ids).logits[0, positions]
        with torch.no_grad(), tiny_host.only("steer") as adapted:
            adapter_logits = adapted(ids).logits[0, positions]
        tailored = torch.log_softmax(combine_logits(base_logits, adapter_logits, base_logits, alpha), -1)
        target = torch.tensor(completion).unsqueeze(-1)
        assert torch.allclose(batch.tailored_logprobs[s, :length], tailored.gather(-1, target).squeeze(-1), atol=1e-4)
        assert torch.allclose(batch.base_logprobs[s, :length], torch.log_softmax(base_logits, -1).gather(-1, target).squeeze(-1), atol=1e-4)


def assert_same_decoding(a, b):
    """Same tokens in every column, same log-probabilities (to float tolerance)."""
    for column in ("base", "tailored"):
        for x, y in zip(getattr(a, column), getattr(b, column), strict=True):
            assert x.token_ids == y.token_ids
            assert x.tailored_logprobs == pytest.approx(y.tailored_logprobs, abs=1e-4)
            assert x.base_logprobs == pytest.approx(y.base_logprobs, abs=1e-4)


def test_the_engine_decodes_what_the_reference_loop_decodes(tiny_host, tokenizer):
    """The engine (KV caches, left padding, every stream and column in one batch) against the paper's loop for one
    stream (ipa.decoding.reference: full forwards, no cache, no batching): prompts of different lengths, sampling and
    greedy, several samples a prompt, adapters on the base's weights and on a separate model, a reward-token prefix."""
    policy = with_adapter(tiny_host, n_reward_tokens=3)
    with torch.no_grad():
        tiny_host.reward_embeddings["steer"][0].normal_(0, 2.0)
    small = AdapterHost(tiny_llama(tokenizer, seed=7, hidden=32), tokenizer, "tiny-small")
    small.new_adapter("s", AdapterCard(task="test"))
    perturb_lora(small, "s")
    other = TailoredPolicy(tiny_host, small, "s", "residual")
    for config in (DecodeConfig(max_new_tokens=10, alpha=1.5, seed=3), DecodeConfig(max_new_tokens=30, temperature=0, stop_at_eos=False)):
        for policy_ in (policy, other):
            assert_engine_matches_reference(policy_, PROMPTS, config, n=2)


def test_separate_adapter_model_residual_untrained_equals_base(tokenizer):
    """The adapter's initial model is another (smaller) model with the same tokenizer."""
    base = AdapterHost(tiny_llama(tokenizer, seed=0, hidden=48), tokenizer, "tiny-base")
    small = AdapterHost(tiny_llama(tokenizer, seed=7, hidden=32), tokenizer, "tiny-small")
    small.new_adapter("s", AdapterCard(task="test"))
    policy = TailoredPolicy(base, small, "s", "residual")
    config = DecodeConfig(max_new_tokens=10, temperature=0, alpha=2.0)
    result = generate(policy, PROMPTS, config)
    assert [c.token_ids for c in result.base] == [c.token_ids for c in result.tailored]
    perturb_lora(small, "s")
    result = generate(policy, PROMPTS, config)
    assert any(b.token_ids != t.token_ids for b, t in zip(result.base, result.tailored))


def test_reward_token_prefix_reaches_the_adapter(tiny_host):
    """Adapter rows see [best reward token] + prompt; base and init rows see the prompt alone."""
    policy = with_adapter(tiny_host, n_reward_tokens=5)
    with torch.no_grad():
        tiny_host.reward_embeddings["steer"][0].normal_(0, 5.0)
    alpha = 1.0
    batch = sample(policy, PROMPTS[:1], DecodeConfig(max_new_tokens=6, alpha=alpha, seed=4))
    prompt_ids = batch.prompt_ids[0]
    ids = torch.tensor([prompt_ids + batch.completion_ids[0].tolist()])
    positions = slice(len(prompt_ids) - 1, ids.shape[1] - 1)
    with torch.no_grad():
        with tiny_host.base_only() as base:
            base_logits = base(ids).logits[0, positions]
        embeds = tiny_host.input_embeddings()(ids)
        prefixed = torch.cat([tiny_host.reward_embeddings["steer"][0].view(1, 1, -1), embeds], dim=1)
        with tiny_host.only("steer") as adapted:
            adapter_logits = adapted(inputs_embeds=prefixed).logits[0, 1:][positions]
            unprefixed_logits = adapted(ids).logits[0, positions]
    target = batch.completion_ids[0].unsqueeze(-1)

    def chosen(adapter):
        return torch.log_softmax(combine_logits(base_logits, adapter, base_logits, alpha), -1).gather(-1, target).squeeze(-1)

    assert torch.allclose(batch.tailored_logprobs[0], chosen(adapter_logits), atol=1e-4)
    assert not torch.allclose(batch.tailored_logprobs[0], chosen(unprefixed_logits), atol=1e-4)


def test_min_new_tokens_and_eos(tiny_host):
    policy = with_adapter(tiny_host)
    eos = tiny_host.tokenizer.eos_token_id
    with torch.no_grad():  # make EOS the most likely token everywhere
        tiny_host.base_model.lm_head.weight[eos] += 20 * tiny_host.base_model.model.norm.weight.sign()
    result = generate(policy, PROMPTS[:1], DecodeConfig(max_new_tokens=10, min_new_tokens=4, temperature=0))
    for c in result.base + result.tailored:
        assert len(c.token_ids) == 5 and c.finished and c.token_ids[-1] == eos
        assert eos not in c.token_ids[:4]


def test_streaming_yields_growing_text(tiny_host):
    policy = with_adapter(tiny_host)
    updates = [run.result(final=run.done) for run in decode_steps(policy, PROMPTS[:1], DecodeConfig(max_new_tokens=6, seed=0,
                                                                                                   stop_at_eos=False))]
    lengths = [len(u.tailored[0].token_ids) for u in updates]
    assert lengths == [1, 2, 3, 4, 5, 6]
    assert updates[-1].done and not updates[0].done
    assert updates[-1].tailored[0].text == generate(policy, PROMPTS[:1], DecodeConfig(max_new_tokens=6, seed=0, stop_at_eos=False)).tailored[0].text


def test_same_seed_same_text_other_seed_other_text(tiny_host):
    policy = with_adapter(tiny_host)
    a = generate(policy, PROMPTS, DecodeConfig(max_new_tokens=10, seed=11))
    b = generate(policy, PROMPTS, DecodeConfig(max_new_tokens=10, seed=11))
    c = generate(policy, PROMPTS, DecodeConfig(max_new_tokens=10, seed=12))
    assert [x.token_ids for x in a.tailored] == [x.token_ids for x in b.tailored]
    assert [x.token_ids for x in a.tailored] != [x.token_ids for x in c.tailored]
    assert generate(policy, PROMPTS[:1], DecodeConfig(max_new_tokens=2, seed=None)).seed >= 0


def test_single_column_modes(tiny_host):
    policy = with_adapter(tiny_host)
    only_tailored = generate(policy, PROMPTS, DecodeConfig(max_new_tokens=5, temperature=0), columns=("tailored",))
    both = generate(policy, PROMPTS, DecodeConfig(max_new_tokens=5, temperature=0))
    assert only_tailored.base == []
    assert [c.token_ids for c in only_tailored.tailored] == [c.token_ids for c in both.tailored]


# --- bad input ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, message", [
    ({"alpha": -0.1}, "alpha"), ({"alpha": 10.5}, "alpha"), ({"max_new_tokens": 0}, "max_new_tokens"),
    ({"top_p": 0.0}, "top_p"), ({"temperature": -1}, "temperature"), ({"min_new_tokens": 99, "max_new_tokens": 5}, "min_new_tokens"),
])
def test_bad_decode_settings(kwargs, message):
    with pytest.raises(DecodeError, match=message):
        DecodeConfig(**kwargs)


def test_empty_prompt_is_a_clear_error(tiny_host):
    policy = TailoredPolicy(tiny_host)
    for prompts in (["   "], [""], []):
        with pytest.raises(DecodeError, match="empty|No prompt"):
            generate(policy, prompts, DecodeConfig(max_new_tokens=3))
    with pytest.raises(DecodeError, match="not text"):
        generate(policy, [None], DecodeConfig(max_new_tokens=3))


def test_too_long_prompt_is_truncated_from_the_left_with_a_warning(tiny_host):
    policy = TailoredPolicy(tiny_host)
    long_prompt = "word " * 400  # the tiny model's window is 128 tokens
    result = generate(policy, [long_prompt + "END"], DecodeConfig(max_new_tokens=8, temperature=0))
    assert result.warnings and "kept its last 120 tokens" in result.warnings[0]
    assert len(result.base[0].token_ids) == 8
    batch = next(decode_steps(policy, [long_prompt + "END"], DecodeConfig(max_new_tokens=8))).batch()
    assert len(batch.prompt_ids[0]) == 120
    assert tiny_host.tokenizer.decode(batch.prompt_ids[0]).endswith("END")


# --- composed adapters ----------------------------------------------------------------------------


@pytest.mark.parametrize("combination", ["residual", "paper"])
def test_composed_product_equals_the_hand_computed_sum_of_log_terms(tiny_host, combination):
    alpha, alpha_2 = 1.2, 0.5
    policy = composed(tiny_host, alpha_2, combination)
    batch = sample(policy, PROMPTS, DecodeConfig(max_new_tokens=8, alpha=alpha, seed=2))
    for s, prompt_ids in enumerate(batch.prompt_ids):
        length = int(batch.completion_mask[s].sum())
        completion = batch.completion_ids[s, :length]
        ids = torch.tensor([prompt_ids + completion.tolist()])
        positions = slice(len(prompt_ids) - 1, len(prompt_ids) - 1 + length)
        with torch.no_grad():
            with tiny_host.base_only() as model:
                base = model(ids).logits[0, positions]
            with tiny_host.only("steer") as model:
                steer = model(ids).logits[0, positions]
            with tiny_host.only("second") as model:
                second = model(ids).logits[0, positions]
        if combination == "residual":
            log_terms = torch.log_softmax(base, -1) + alpha * (steer - base) + alpha_2 * (second - base)
        else:
            log_terms = torch.log_softmax(base, -1) + alpha * steer + alpha_2 * second
        tailored = torch.log_softmax(log_terms, -1)
        assert torch.allclose(batch.tailored_logprobs[s, :length], tailored.gather(-1, completion.unsqueeze(-1)).squeeze(-1), atol=1e-4)
        kl = (tailored.exp() * (tailored - torch.log_softmax(base, -1))).sum(-1)  # the whole distribution, not one token
        assert torch.allclose(batch.kl[s, :length], kl, atol=1e-4)


def test_composing_a_second_adapter_at_alpha_zero_equals_the_single_adapter(tiny_host):
    policy = composed(tiny_host, alpha_2=0.0)
    single = TailoredPolicy(tiny_host, tiny_host, "steer")
    for config in (DecodeConfig(max_new_tokens=10, alpha=1.5, seed=4), DecodeConfig(max_new_tokens=10, temperature=0)):
        a, b = generate(policy, PROMPTS, config, n=2), generate(single, PROMPTS, config, n=2)
        for x, y in zip(a.base + a.tailored, b.base + b.tailored, strict=True):
            assert x.token_ids == y.token_ids and x.tailored_logprobs == y.tailored_logprobs
    # ... and the first at alpha 0 leaves the second alone: the same as that adapter by itself
    second_only = TailoredPolicy(tiny_host, tiny_host, "steer", more_adapters=(("second", 0.8),))
    a = generate(second_only, PROMPTS, DecodeConfig(max_new_tokens=10, alpha=0.0, seed=6))
    b = generate(TailoredPolicy(tiny_host, tiny_host, "second"), PROMPTS, DecodeConfig(max_new_tokens=10, alpha=0.8, seed=6))
    assert [c.token_ids for c in a.tailored] == [c.token_ids for c in b.tailored]


def test_composed_adapters_decode_as_the_reference_loop_does(tiny_host, tokenizer):
    """A composition decodes in the engine as in the reference loop: adapters on the base's weights, and on a
    separate model (with init rows)."""
    policy = composed(tiny_host, alpha_2=1.0)
    small = AdapterHost(tiny_llama(tokenizer, seed=7, hidden=32), tokenizer, "tiny-small")
    for seed, name in enumerate(("s1", "s2")):
        small.new_adapter(name, AdapterCard(task="test"))
        perturb_lora(small, name, seed=seed + 3)
    other = TailoredPolicy(tiny_host, small, "s1", more_adapters=(("s2", 0.7),))
    config = DecodeConfig(max_new_tokens=8, alpha=1.0, seed=3)
    for policy_ in (policy, other):
        assert_engine_matches_reference(policy_, PROMPTS, config, n=2)
    both = generate(policy, PROMPTS, config)
    first = generate(TailoredPolicy(tiny_host, tiny_host, "steer"), PROMPTS, config)
    assert [c.tailored_logprobs for c in both.tailored] != [c.tailored_logprobs for c in first.tailored]  # the second counts


@pytest.mark.parametrize("more, message", [
    ((("steer", 1.0),), "composed twice"), ((("nope", 1.0),), "No adapter named 'nope'"),
    ((("second", 11.0),), "alpha of adapter 'second' must be a number from 0 to 10, got 11.0"),
    ((("second", float("nan")),), "got nan"),
])
def test_bad_compositions_are_clear_errors(tiny_host, more, message):
    composed(tiny_host)
    with pytest.raises(UserError, match=message):
        TailoredPolicy(tiny_host, tiny_host, "steer", more_adapters=more)
    with pytest.raises(DecodeError, match="need a first adapter"):
        TailoredPolicy(tiny_host, more_adapters=(("second", 1.0),))
