"""Draft and verify on a remote base (ipa/decoding/drafting.py), fast: tiny models, a fake vLLM server answered by a
tiny model (tests/servers.py ModelServer). The real servers' tests are in tests/test_api_base.py.

The server's model is the local stand-in with noise on its output layer, so drafts are often rejected: the rule's
redraws, the KV rewinds and the bonus tokens all run. The oracle is one request per token (draft_tokens = 0), which
decodes exactly as before drafting existed: greedy must give its tokens, sampling its distribution.
"""

from __future__ import annotations

import time

import pytest
import torch
from scipy.stats import chisquare

from ipa.decoding.engine import Engine, Request, generate
from ipa.decoding.policy_math import filter_logits, tailored_logprobs, verify_drafts
from ipa.decoding.remote import ApiBase, ApiBaseConfig, ApiBaseError
from ipa.decoding.run import DecodeConfig, DecodeRun, TailoredPolicy
from ipa.policy_adapter import AdapterCard, AdapterHost
from tests.helpers import PROMPTS, perturb_lora, tiny_llama
from tests.servers import MODEL_ALIAS, ModelServer


@pytest.fixture
def steered_host(tokenizer):
    """The local model (the stand-in for the base) with an adapter that steers."""
    host = AdapterHost(tiny_llama(tokenizer), tokenizer, "tiny")
    torch.manual_seed(0)
    host.new_adapter("steer", AdapterCard(task="custom"))
    perturb_lora(host, "steer", scale=0.3, seed=2)
    return host


@pytest.fixture
def server_model(tokenizer):
    """The served base: the stand-in's weights with noise on the output layer (same vocabulary, other numbers)."""
    model = tiny_llama(tokenizer)
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        head = model.get_output_embeddings().weight
        head.add_(torch.randn(head.shape, generator=generator) * head.std() * 0.04)
    return model


def chisquare_p(observed: torch.Tensor, expected: torch.Tensor) -> float:
    """The chi-square test's p-value of observed counts against expected proportions (scaled to the same total)."""
    observed = observed.double()
    expected = expected.double() / expected.double().sum() * observed.sum()
    return float(chisquare(observed.numpy(), expected.numpy()).pvalue)


def connect(host, server, **overrides) -> ApiBase:
    return ApiBase.for_host(ApiBaseConfig(url=server.url, model=MODEL_ALIAS, backoff=0.01, **overrides), host)


def decode(host, server, config, draft_tokens, prompts=PROMPTS, n=1, columns=("base", "tailored"), **overrides):
    api = connect(host, server, draft_tokens=draft_tokens, **overrides)
    result = generate(TailoredPolicy(host, host, "steer", remote_base=api), prompts, config, n=n, columns=columns)
    return result, api


# --- the rule itself --------------------------------------------------------------------------------------------


def test_the_speculative_rule_gives_the_target_distribution_whatever_the_draft():
    """200,000 draws from a draft q kept or redrawn against p: their frequencies are p's (chi-square), including a
    token q never proposes and one p excludes."""
    generator = torch.Generator().manual_seed(0)
    p = torch.tensor([0.5, 0.3, 0.15, 0.05, 0.0])
    q = torch.tensor([0.1, 0.1, 0.5, 0.0, 0.3])
    n = 200_000
    drafted = torch.multinomial(q, n, replacement=True, generator=generator)
    u = torch.rand((n, 2), generator=generator)
    accepted, tokens = verify_drafts(torch.log(q).expand(n, -1), torch.log(p).expand(n, -1), drafted, u[:, 0], u[:, 1])
    counts = torch.bincount(tokens, minlength=5)
    assert counts[4] == 0  # p gives it nothing
    assert chisquare_p(counts[:4], p[:4]) > 1e-3
    # acceptance is the overlap of p and q: sum(min(p, q)) = 0.1 + 0.1 + 0.15 = 0.35
    assert abs(accepted.double().mean().item() - 0.35) < 0.01


# --- against one request per token --------------------------------------------------------------------------------


def test_greedy_drafting_gives_the_per_token_text_with_fewer_requests(steered_host, server_model, tokenizer):
    config = DecodeConfig(max_new_tokens=12, temperature=0, alpha=1.0, stop_at_eos=False)
    with ModelServer(tokenizer, server_model) as server:
        per_token, one = decode(steered_host, server, config, draft_tokens=0)
        drafted, api = decode(steered_host, server, config, draft_tokens=4)
    assert api.scoring == "prompt_logprobs" and one.draft_tokens == 0
    for a, b in zip(per_token.base + per_token.tailored, drafted.base + drafted.tailored):
        assert a.token_ids == b.token_ids
        assert a.tailored_logprobs == pytest.approx(b.tailored_logprobs, abs=1e-4)
        assert a.base_mass == pytest.approx(b.base_mass, abs=1e-5)
    stats = api.stats
    print(f"\nper token: {one.stats.as_dict()}\ndrafted: {stats.as_dict()}")
    assert 0 < stats.accepted < stats.drafted  # drafts were rejected too: the rewinds ran
    assert stats.tokens == one.stats.tokens == 2 * len(PROMPTS) * 12
    assert stats.requests < one.stats.requests / 1.5


def test_sampled_drafting_follows_the_tailored_distribution(steered_host, server_model, tokenizer):
    """600 samples of a 2-token continuation, drafted: the first token's frequencies are the tailored policy's
    (computed here from the server's top-k and the local adapter), and so are the second's after the likeliest
    first token. Each draft is kept or redrawn: the redraws are where a bug would show."""
    host, n = steered_host, 600
    config = DecodeConfig(max_new_tokens=2, temperature=1.0, top_p=1.0, alpha=1.0, seed=3, stop_at_eos=False)
    prompt = host.tokenizer(PROMPTS[0], add_special_tokens=False)["input_ids"]
    with ModelServer(tokenizer, server_model) as server:
        result, api = decode(host, server, config, 4, prompts=[prompt], n=n, columns=("tailored",))

        def tailored(ids):
            base = api.next_logprobs([ids])
            with torch.inference_mode(), host.only("steer") as model:
                adapter = model(torch.tensor([ids])).logits[:, -1].float()
            with torch.inference_mode(), host.base_only() as model:
                init = model(torch.tensor([ids])).logits[:, -1].float()
            return torch.softmax(filter_logits(tailored_logprobs(base, [adapter], init, [1.0]), 1.0, 0, 1.0), -1)[0]

        first = torch.tensor([c.token_ids[0] for c in result.tailored])
        likeliest = int(torch.mode(first).values)
        second = torch.tensor([c.token_ids[1] for c in result.tailored if c.token_ids[0] == likeliest])
        expected_first, expected_second = tailored(prompt), tailored(prompt + [likeliest])
    assert 0 < api.stats.accepted < api.stats.drafted
    for tokens, expected in ((first, expected_first), (second, expected_second)):
        counts = torch.bincount(tokens, minlength=len(expected)).double()
        assert counts[expected == 0].sum() == 0  # nothing outside the server's top k
        keep = expected * len(tokens) >= 5  # chi-square bins of at least 5 expected; the rest pooled
        observed = torch.cat([counts[keep], counts[~keep].sum()[None]])
        wanted = torch.cat([expected[keep], expected[~keep].sum()[None]]) * len(tokens)
        assert chisquare_p(observed, wanted) > 1e-3, (observed, wanted)


def test_echo_scoring_and_a_server_that_scores_nothing(steered_host, server_model, tokenizer):
    """The legacy `echo` form scores as prompt_logprobs does; a server with neither gets one request per token."""
    config = DecodeConfig(max_new_tokens=8, temperature=0, alpha=1.0, stop_at_eos=False)
    with ModelServer(tokenizer, server_model, scoring=None) as server:
        reference, plain = decode(steered_host, server, config, draft_tokens=4, prompts=PROMPTS[:2])
    assert plain.scoring is None and plain.draft_tokens == 0 and plain.stats.drafted == 0
    assert any("one request per token" in w for w in plain.warnings)
    with ModelServer(tokenizer, server_model, scoring="echo") as server:
        echoed, api = decode(steered_host, server, config, draft_tokens=4, prompts=PROMPTS[:2])
    assert api.scoring == "echo" and api.stats.drafted > 0
    assert [c.token_ids for c in echoed.tailored] == [c.token_ids for c in reference.tailored]


@pytest.mark.parametrize("cap", [5, 20])
def test_a_capped_server_tailors_on_the_tokens_it_covers(steered_host, server_model, tokenizer, cap):
    """A server capped at k log-probabilities (hosted APIs: 5 or 20): asking more is refused with a message naming
    the server; asking k, every chosen token is one the server reported, and each token's covered mass is the sum of
    the server's k probabilities there."""
    config = DecodeConfig(max_new_tokens=6, temperature=1.0, top_p=1.0, alpha=1.0, seed=1, stop_at_eos=False)
    with ModelServer(tokenizer, server_model, cap=cap) as server:
        with pytest.raises(ApiBaseError, match=rf"at {server.url} refused the request .*cap of {cap}"):
            connect(steered_host, server, top_logprobs=cap + 1, max_retries=0)
        result, api = decode(steered_host, server, config, draft_tokens=3, prompts=PROMPTS[:1], top_logprobs=cap)
        prompt = steered_host.tokenizer(PROMPTS[0], add_special_tokens=False)["input_ids"]
        for completion in result.base + result.tailored:
            assert len(completion.base_mass) == len(completion.token_ids)
            for t, token in enumerate(completion.token_ids):
                with torch.inference_mode():
                    exact = torch.softmax(server_model(torch.tensor([prompt + completion.token_ids[:t]])).logits[0, -1], -1)
                top = exact.topk(cap)
                assert token in top.indices.tolist()
                assert completion.base_mass[t] == pytest.approx(float(top.values.sum()), abs=1e-4)
    masses = [m for c in result.base for m in c.base_mass]
    assert all(0 < m < 1 for m in masses)


# --- faults: one server's trouble is its own users' -----------------------------------------------------------------


def solo(host, prompts, config):
    return generate(TailoredPolicy(host, host, "steer"), prompts, config)


def test_a_slow_server_does_not_hold_up_other_requests(steered_host, server_model, tokenizer):
    """A local request and a request on a server that takes 0.4 s an answer, in one engine: the local one finishes
    in its own time, with the tokens it gets alone (the waiting rows' masked pads leave the batch's caches right),
    and so does the remote one, with the tokens it gets alone."""
    host = steered_host
    config = DecodeConfig(max_new_tokens=10, temperature=0, alpha=1.0, stop_at_eos=False)
    with ModelServer(tokenizer, server_model) as fast_server:
        alone, _ = decode(host, fast_server, config, draft_tokens=2, prompts=PROMPTS[1:])
    with ModelServer(tokenizer, server_model, delay=0.4) as server:
        api = connect(host, server, draft_tokens=2)
        engine = Engine(host)
        remote = Request(DecodeRun(TailoredPolicy(host, host, "steer", remote_base=api), PROMPTS[1:], config))
        local = Request(DecodeRun(TailoredPolicy(host, host, "steer"), PROMPTS[:1], config))
        engine.submit(remote)
        engine.submit(local)
        start = time.perf_counter()
        while not local.done:
            engine.step()
        local_seconds = time.perf_counter() - start
        assert remote.run.steps < config.max_new_tokens  # still waiting on its server
        while not remote.done:
            engine.step()
        remote_seconds = time.perf_counter() - start
    print(f"\nlocal request: {local_seconds:.2f} s, remote: {remote_seconds:.2f} s, {api.stats.as_dict()}")
    assert local_seconds < 0.4 * 2 < remote_seconds
    assert local.run.result(final=True).tailored[0].token_ids == solo(host, PROMPTS[:1], config).tailored[0].token_ids
    assert [c.token_ids for c in remote.run.result(final=True).tailored] == [c.token_ids for c in alone.tailored]


def test_a_server_dying_mid_text_fails_its_own_request_with_one_message(steered_host, server_model, tokenizer):
    host = steered_host
    config = DecodeConfig(max_new_tokens=12, temperature=0, alpha=1.0, stop_at_eos=False)
    with ModelServer(tokenizer, server_model) as server:
        api = connect(host, server, draft_tokens=2, max_retries=1)
        server.die_after = server.completions + 4
        engine = Engine(host)
        remote = Request(DecodeRun(TailoredPolicy(host, host, "steer", remote_base=api), PROMPTS[1:], config))
        local = Request(DecodeRun(TailoredPolicy(host, host, "steer"), PROMPTS[:1], config))
        engine.submit(remote)
        engine.submit(local)
        for _ in range(500):
            if engine.idle:
                break
            engine.step()
    assert engine.failed == [remote] and remote.run.steps < config.max_new_tokens
    message = str(remote.error)
    assert isinstance(remote.error, ApiBaseError) and server.url in message and "HTTP 500" in message
    assert local.run.done and local.error is None
    with pytest.raises(ApiBaseError, match="failed after 2 attempts: HTTP 500"):
        with ModelServer(tokenizer, server_model) as server:
            api = connect(host, server, draft_tokens=2, max_retries=1)
            server.die_after = server.completions + 1
            generate(TailoredPolicy(host, host, "steer", remote_base=api), PROMPTS[:1], config)


def test_a_server_answering_with_another_model_is_named(steered_host, server_model, tokenizer):
    with ModelServer(tokenizer, server_model, answer_model="someone-else") as server:
        with pytest.raises(ApiBaseError, match=r"for the model 'smollm2-135m' with the model 'someone-else'"):
            connect(steered_host, server)


def test_draft_tokens_are_checked():
    with pytest.raises(ApiBaseError, match="--draft-tokens must be a whole number from 0 to 16"):
        ApiBaseConfig(url="http://127.0.0.1:8000/v1", model="m", draft_tokens=-1)


# --- adapters served beside the base ------------------------------------------------------------------------------


def test_an_adapter_served_beside_the_base_is_combined_on_the_union_of_top_k(steered_host, server_model, tokenizer):
    """Issue 27, item 4: the adapter's rows come from the server as a second model (a LoRA there); each step's
    tailored distribution is the formula on the union of the base's and the adapter's top k (topk_union), the
    residual's initial model being the served base. Checked at every step of a greedy run against that formula
    computed here, with every request to one of the two models, and the local host running no rows."""
    from ipa.decoding.policy_math import topk_union

    host = steered_host

    class Steered(torch.nn.Module):  # the served LoRA: the local adapter on the server's model
        def forward(self, ids):
            with host.only("steer") as model:
                return model(ids)

    config = DecodeConfig(max_new_tokens=6, temperature=0, alpha=1.0, stop_at_eos=False)
    lora = Steered()
    with ModelServer(tokenizer, host.base_model, more_models={"steer-lora": lora}) as server:
        with pytest.raises(ApiBaseError, match="steer-missing"):
            connect(host, server, served_adapters="steer=steer-missing")
        api = connect(host, server, served_adapters="steer=steer-lora")
        assert api.draft_tokens == 0
        before = len(server.requests)
        engine = Engine(host)
        request = Request(DecodeRun(TailoredPolicy(host, host, "steer", remote_base=api), PROMPTS[:2], config))
        assert request.rows() == []  # nothing runs here: the page in front of a server
        engine.submit(request)
        while not request.done:
            engine.step()
        result = request.run.result(final=True)
        models = [payload["model"] for path, payload in server.requests[before:] if path.endswith("/completions")]
        assert set(models) == {MODEL_ALIAS, "steer-lora"}
        for prompt, completion in zip(PROMPTS[:2], result.tailored):
            ids = host.tokenizer(prompt, add_special_tokens=False)["input_ids"]
            for token in completion.token_ids:
                base = api.next_logprobs([ids])
                adapter = ApiBase.for_host(ApiBaseConfig(url=server.url, model="steer-lora", draft_tokens=0), host).next_logprobs([ids])
                filled_base, filled_adapter = topk_union([base, adapter])
                expected = tailored_logprobs(filled_base, [filled_adapter], filled_base, [1.0])
                assert token == int(expected.argmax())
                ids = ids + [token]
