"""A light adapter (issue 26): its initial model is the base's first layers (ipa.models.light_model_dir), cut once
and cached; the engine runs its rows inside the base's forward pass (ipa.decoding.fused), tested against the
reference loop; training backpropagates through it alone; a light model refuses a base it was not cut from. And the
identity behind the offline demo: a same-size residual adapter at alpha 1 *is* the LoRA-tuned model."""

from __future__ import annotations

import json

import pytest
import torch

from ipa.decoding.engine import Engine, Request
from ipa.decoding.policy_math import tailored_logprobs
from ipa.decoding.run import DecodeConfig, DecodeRun, TailoredPolicy
from ipa.loading import attach_adapter, load_host, pair
from ipa.models import LIGHT_LAYERS, ModelLoadError, light_info, light_model_dir, light_name, parameter_count
from ipa.policy_adapter import AdapterCard, AdapterError
from tests.helpers import PROMPTS, assert_engine_matches_reference, perturb_lora, save_tiny_model


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A cache of its own: each test cuts its light models afresh."""
    monkeypatch.setenv("IPA_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def six_layers(tokenizer, tmp_path) -> str:
    """A tiny Llama of 6 layers saved as a model folder: its light cut keeps 4."""
    return save_tiny_model(tmp_path / "six", tokenizer, layers=6)


def light_policy(base_dir: str, n_reward_tokens: int = 0, name: str = "steer") -> TailoredPolicy:
    base, light = load_host(base_dir), load_host(light_name(base_dir))
    light.new_adapter(name, AdapterCard(task="test", n_reward_tokens=n_reward_tokens))
    perturb_lora(light, name)
    if n_reward_tokens:
        with torch.no_grad():
            light.reward_embeddings[name][0].normal_(0, 5.0)
    return TailoredPolicy(base, light, name)


def test_the_light_cut_is_the_bases_first_layers_built_once_and_fingerprinted(cache, six_layers):
    directory = light_model_dir(six_layers)
    stamp = (directory / "model.safetensors").stat().st_mtime_ns
    assert light_model_dir(six_layers) == directory and (directory / "model.safetensors").stat().st_mtime_ns == stamp
    config = json.loads((directory / "config.json").read_text())
    assert config["num_hidden_layers"] == LIGHT_LAYERS and config["ipa_light"]["layers"] == [0, 1, 2, 3]
    base, light = load_host(six_layers), load_host(light_name(six_layers))
    assert light_info(light.base_model)["source_parameters"] == parameter_count(base.base_model)
    assert light.light_layers(base) == [0, 1, 2, 3]
    for j in range(LIGHT_LAYERS):
        for (name, a), (_, b) in zip(base.base_model.model.layers[j].named_parameters(),
                                     light.base_model.model.layers[j].named_parameters()):
            assert torch.equal(a, b), name
    cut_again = light_model_dir(six_layers)  # a second build from scratch writes the same weights
    digest = light_info(light.base_model)["digest"]
    import shutil

    shutil.rmtree(cut_again)
    assert light_info(load_host(light_name(six_layers)).base_model)["digest"] == digest


def test_light_rows_run_inside_the_bases_forward_pass_and_decode_as_the_reference_loop(cache, six_layers):
    policy = light_policy(six_layers)
    engine = Engine.for_policy(policy)
    assert engine.batches["adapter"] is engine.batches["base"]  # one forward pass a step
    for config in (DecodeConfig(max_new_tokens=10, alpha=1.5, seed=3), DecodeConfig(max_new_tokens=12, temperature=0,
                                                                                     stop_at_eos=False)):
        assert_engine_matches_reference(policy, PROMPTS, config, n=2)
    quark = light_policy(six_layers, n_reward_tokens=3, name="quark")  # a reward token before the light rows' prompts
    assert_engine_matches_reference(quark, PROMPTS[:2], DecodeConfig(max_new_tokens=8, seed=5))


def test_light_requests_join_and_leave_a_running_batch_as_if_alone(cache, six_layers):
    """Each layer's cache holds all rows or the base's only: requests joining mid-run and leaving early (their rows
    removed from both kinds of layer) leave the others' tokens as they were alone."""
    policy = light_policy(six_layers)
    plain = TailoredPolicy(policy.base)

    def runs():
        return [DecodeRun(policy, PROMPTS[:2], DecodeConfig(max_new_tokens=9, seed=1)),
                DecodeRun(plain, PROMPTS[2:], DecodeConfig(max_new_tokens=5, seed=2), columns=("base",)),
                DecodeRun(policy, PROMPTS[1:], DecodeConfig(max_new_tokens=6, alpha=2.0, seed=3), n=2,
                          columns=("tailored",))]

    alone = runs()
    for run in alone:
        engine = Engine.for_policy(policy)
        engine.submit(Request(run))
        while not run.done:
            engine.step()
    together, engine = runs(), Engine.for_policy(policy)
    requests = [Request(run) for run in together]
    joins, step = {0: 0, 1: 2, 2: 4}, 0
    while not all(r.done for r in requests):
        for i, request in enumerate(requests):
            if joins[i] == step:
                engine.submit(request)
        engine.step()
        batch = engine.batches["base"]
        if batch.rows:
            n_full = sum(not row.light for row in batch.rows)
            assert all(not row.light for row in batch.rows[:n_full]) and all(row.light for row in batch.rows[n_full:])
            for i, layer in enumerate(batch.cache.layers):
                assert layer.keys.shape[0] == (len(batch.rows) if i < LIGHT_LAYERS else n_full)
        step += 1
    for a, b in zip(alone, together):
        assert a.completion.tolist() == b.completion.tolist()
        assert torch.allclose(a.tailored_lp, b.tailored_lp, atol=1e-4)


def test_a_light_model_refuses_a_base_it_was_not_cut_from(cache, tokenizer, tmp_path, six_layers):
    other = save_tiny_model(tmp_path / "other", tokenizer, layers=6, seed=5)  # same shapes, other weights
    with pytest.raises(ModelLoadError) as caught:
        pair(load_host(other), load_host(light_name(six_layers)))
    message = str(caught.value)
    assert "light model cut from" in message and six_layers in message and other in message


def test_an_adapter_trained_on_one_light_model_does_not_load_on_another(cache, tokenizer, tmp_path, six_layers):
    policy = light_policy(six_layers)
    policy.adapter.save_adapter("steer", tmp_path / "adapter")
    other = save_tiny_model(tmp_path / "other", tokenizer, layers=6, seed=5)
    with pytest.raises(AdapterError) as caught:
        load_host(light_name(other)).load_adapter("steer", tmp_path / "adapter")
    assert six_layers in str(caught.value) and other in str(caught.value)
    card = policy.adapter.cards["steer"]
    assert card.adapter_init_model == light_name(six_layers) and card.init_fingerprint["light_of_layers"] == 6
    loaded = attach_adapter(load_host(six_layers), tmp_path / "adapter")  # its own base: loads, light rows fused
    assert loaded.adapter.model_name == light_name(six_layers) and loaded.adapter.light_layers(loaded.base) == [0, 1, 2, 3]


def test_training_a_light_adapter_backpropagates_through_the_light_model_only(cache, six_layers, tmp_path):
    from ipa.training.config import TrainConfig, tailored_token_stats
    from ipa.training.loop import build_policy, train

    config = TrainConfig.from_fields(task="toxicity", base=six_layers, adapter_init="light", out=str(tmp_path / "run"),
                                     steps=2, batch_size=4, group_size=2, micro_batch_size=4, max_new_tokens=4,
                                     eval_prompts=2, eval_samples=1, eval_every=0, samples_every=0, device="cpu",
                                     lr=1e-2)
    policy = build_policy(config, torch.device("cpu"), torch.float32)
    assert policy.adapter.model_name == light_name(six_layers) and policy.adapter.base_model.config.num_hidden_layers == 4
    stats = tailored_token_stats(policy, [[5, 6, 7], [8, 9]], torch.tensor([[10, 11], [12, 13]]), 1.0)
    stats["logprob"].sum().backward()
    trained = policy.adapter.trainable_parameters(policy.adapter_name)
    assert trained and all(p.grad is not None for p in trained)
    assert all(p.grad is None for p in policy.base.base_model.parameters())
    adapter_dir = train(config, progress=False)
    card = json.loads((adapter_dir / "card.json").read_text())
    assert card["adapter_init_model"] == light_name(six_layers) and card["steps"] == 2


@pytest.mark.slow
def test_a_same_size_residual_adapter_at_alpha_1_is_the_tuned_model(embedded_host):
    """The identity in the README's method section, on the embedded model in float32: with the adapter's initial
    model equal to the base, log_softmax(base) + alpha (adapter − base) is at alpha 1 the LoRA-tuned model's own
    log-softmax, and at other alphas the geometric path p_base^(1 − alpha) · p_tuned^alpha, normalised."""
    host = embedded_host
    host.new_adapter("identity", AdapterCard(task="test"))
    try:
        perturb_lora(host, "identity", scale=0.02)
        ids = host.tokenizer(["The weather today is", "My favourite food is"], return_tensors="pt", padding=True)
        with torch.no_grad():
            with host.base_only() as model:
                base = model(**ids).logits[:, -1].float()
            with host.only("identity") as model:
                tuned = model(**ids).logits[:, -1].float()
        assert (torch.log_softmax(tuned, -1) - torch.log_softmax(base, -1)).abs().max() > 0.1  # it steers
        at_1 = tailored_logprobs(base, [tuned], base, [1.0])
        assert torch.allclose(at_1, torch.log_softmax(tuned, -1), atol=1e-4)
        for alpha in (0.5, 2.0):
            path = torch.log_softmax((1 - alpha) * torch.log_softmax(base, -1) + alpha * torch.log_softmax(tuned, -1), -1)
            assert torch.allclose(tailored_logprobs(base, [tuned], base, [alpha]), path, atol=1e-4)
    finally:
        host.delete_adapter("identity")


def test_compare_decodes_the_light_adapter_alone_and_measures_it_against_the_base(cache, six_layers):
    """adapter_alone with a light adapter: the small tuned model without the base; its log-probabilities and KL are
    the base's view of its tokens (against_base), not its own."""
    from ipa.evaluation.compare import against_base, compare_methods
    from ipa.tasks import TASKS, metrics

    policy = light_policy(six_layers)
    inputs = [{"text": p} for p in PROMPTS]
    config = DecodeConfig(max_new_tokens=5, stop_at_eos=False, seed=0)
    reward = lambda xs, texts: [t.count("e") / max(len(t), 1) for t in texts]  # noqa: E731
    measure = lambda cs: metrics.column_metrics("sentiment", inputs, cs, [{"reward": r, "positivity": r} for r in reward(None, [c.text for c in cs])], 2)  # noqa: E731
    methods, texts = compare_methods(policy, TASKS["sentiment"], inputs, config, 2, 3, reward, measure)
    assert "same_texts_as_ipa" not in methods["adapter_alone"] and texts["adapter_alone"] != texts["ipa"]
    assert methods["adapter_alone"]["kl_per_token"] > 0
    # the base's log-probability of the light model's own tokens, recomputed by hand for one sample
    run = DecodeRun(TailoredPolicy(policy.adapter, policy.adapter, "steer"), PROMPTS[:1], config, columns=("tailored",))
    engine = Engine.for_policy(run.policy)
    engine.submit(Request(run))
    while not run.done:
        engine.step()
    sample = run.result(final=True).tailored[0]
    measured = against_base(policy, [sample], PROMPTS[:1])[0]
    ids = policy.tokenizer(PROMPTS[0], add_special_tokens=False)["input_ids"] + sample.token_ids
    with torch.no_grad():
        logprobs = torch.log_softmax(policy.base.base_model(torch.tensor([ids])).logits[0].float(), -1)
    start = len(ids) - len(sample.token_ids)
    expected = [float(logprobs[start - 1 + t, token]) for t, token in enumerate(sample.token_ids)]
    assert measured.base_logprobs == pytest.approx(expected, abs=1e-4)


def test_light_rows_alone_in_the_fused_batch_give_the_light_models_own_logits(cache, six_layers):
    """Without base rows (a remote base serves them) a fused batch runs the light rows alone, its base-only layers
    kept in step with no rows; a base row joining later fills them. Each step's logits are the light model's own
    (a RowBatch of the light model alone)."""
    from ipa.decoding.engine import Row, RowBatch

    policy = light_policy(six_layers)
    fused, alone = RowBatch(policy.base, policy.adapter, [0, 1, 2, 3]), RowBatch(policy.adapter)
    rows = [Row(1, "adapter", 0, "steer", light=True), Row(1, "init", 0, None, light=True)]
    prompt = policy.tokenizer(PROMPTS[0], add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        assert torch.allclose(fused.join(rows, [prompt] * 2, [None] * 2, 2),
                              alone.join([Row(1, "adapter", 0, "steer"), Row(1, "init", 0, None)], [prompt] * 2, [None] * 2, 2),
                              atol=1e-4)
        assert [layer.keys.shape[0] for layer in fused.cache.layers] == [2, 2, 2, 2, 0, 0]
        tokens = torch.tensor([5, 6])
        assert torch.allclose(fused.step(tokens), alone.step(tokens), atol=1e-4)
        fused.join([Row(2, "base", 0, None)], [prompt[:3]], [None], 2)
        assert [layer.keys.shape[0] for layer in fused.cache.layers] == [3, 3, 3, 3, 1, 1]
        assert torch.allclose(fused.step(torch.tensor([7, 5, 6]))[1:], alone.step(tokens), atol=1e-4)
