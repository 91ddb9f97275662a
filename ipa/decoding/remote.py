"""A black-box base model behind an OpenAI-compatible `/v1/completions` API (the paper's GPT-3 setting).

Each decoding step asks the server, for every row, for the top-k log-probabilities of the next token
(`max_tokens=1`, `logprobs=k`). Tailored decoding combines them with the local adapter's logits over
those k tokens; tokens outside the top k get no mass. One request per row per generated token; rows
go out concurrently, so a batch costs about one round trip per step.

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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import requests
import torch
from requests.adapters import HTTPAdapter

from ipa.errors import UserError

PROBE_TEXT = "The quick brown fox jumps over the lazy dog. Café, naïve — 1234 tokens!"
REPLACEMENT = "\ufffd"  # what a decoder writes for a token that is only part of a UTF-8 character


class ApiBaseError(UserError):
    """The API base failed (server down, timeout, HTTP error, malformed answer, foreign tokenizer); the message says what to do."""


@dataclass
class ApiBaseConfig:
    """Where the black-box base is served and how to call it."""

    url: str = field(default="http://127.0.0.1:8000/v1", metadata={"flag": "base-api"})
    """Tailor a model served at this OpenAI-style URL, e.g. http://127.0.0.1:8000/v1 (requests go to
    {url}/completions); the local --base model then only lends its tokenizer and carries the adapter."""
    model: str = field(default="", metadata={"flag": "base-api-model"})
    """The name the server knows the model by (the `model` field of each request)."""
    top_logprobs: int = 20
    """k, the log-probabilities asked for per step. Servers cap it: vLLM at --max-logprobs (default 20), OpenAI at 5."""
    api_key_env: str | None = None
    """Name of the environment variable holding the API key (sent as a Bearer token, never logged)."""
    timeout: float = field(default=30.0, metadata={"flag": "base-api-timeout"})
    """Seconds one request may take before it is abandoned (and retried)."""
    max_retries: int = 3
    """Retries after a connection error, a timeout or a 5xx/429 answer, with exponential backoff."""
    backoff: float = 0.5
    """Seconds before the first retry; doubled for each further one."""
    concurrency: int = 16
    """Rows sent at once; up to this many rows cost about one round trip per step."""

    def __post_init__(self):
        if not self.url.startswith(("http://", "https://")):
            raise ApiBaseError(f"--base-api must be an http(s) URL such as http://127.0.0.1:8000/v1, got {self.url!r}.")
        self.url = self.url.rstrip("/")
        if not self.model:
            raise ApiBaseError("Name the served model with --base-api-model (the name the server lists under /v1/models).")
        if self.top_logprobs < 1:
            raise ApiBaseError(f"--top-logprobs must be at least 1, got {self.top_logprobs}.")
        if self.timeout <= 0 or self.max_retries < 0 or self.backoff < 0 or self.concurrency < 1:
            raise ApiBaseError("timeout and concurrency must be positive, max_retries and backoff at least 0.")
        if self.api_key_env and not os.environ.get(self.api_key_env):
            raise ApiBaseError(f"--api-key-env names {self.api_key_env}, but that environment variable is not set.")


@dataclass
class ApiStats:
    """What decoding through the API cost (probe requests are counted apart)."""

    requests: int = 0
    """HTTP requests sent while decoding, retries included."""
    retries: int = 0
    """Of those, retries after a failure."""
    tokens: int = 0
    """Next-token distributions received: one per generated token per row."""
    steps: int = 0
    """Decoding steps: one round trip for all rows."""
    seconds: float = 0.0
    """Wall-clock time spent waiting for the server while decoding."""
    probe_requests: int = 0
    """Requests sent at start to check the server."""

    @property
    def requests_per_token(self) -> float:
        return self.requests / self.tokens if self.tokens else 0.0

    @property
    def latency_per_token(self) -> float:
        """Seconds per decoding step (every row gets its next token in one concurrent round trip)."""
        return self.seconds / self.steps if self.steps else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "requests_per_token": round(self.requests_per_token, 3),
                "latency_per_token": round(self.latency_per_token, 4)}


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
    def probe(self) -> None:
        """Check the tokenizer, find the prompt format the server takes, and that it returns k log-probabilities."""
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
    def row_group(self, streams: list[int]) -> "ApiRowGroup":
        """The base rows of one decoding run (the engine asks for them: ipa.decoding.engine)."""
        return ApiRowGroup(self, streams)

    def next_logprobs(self, seqs: list[list[int]], device: torch.device | str = "cpu") -> torch.Tensor:
        """Log-probabilities of each sequence's next token, -inf outside the top k.  R sequences -> (R, V)"""
        start = time.perf_counter()
        # Rows with the same tokens (side by side at the first step, or at alpha = 0) share one request.
        unique = list(dict.fromkeys(tuple(seq) for seq in seqs))
        answers = dict(zip(unique, self._pool.map(self._query, unique)))
        out = torch.full((len(seqs), self.vocab_size), float("-inf"))
        for r, seq in enumerate(seqs):
            ids, logprobs = answers[tuple(seq)]
            out[r, ids] = torch.tensor(logprobs)
        with self._lock:
            self.stats.seconds += time.perf_counter() - start
            self.stats.steps += 1
            self.stats.tokens += len(seqs)
        return out.to(device)

    def _query(self, ids: list[int] | tuple[int, ...], probe: bool = False) -> tuple[list[int], list[float]]:
        """One completions request for one row: the top-k (local ids, log-probabilities) of its next token."""
        prompt = list(ids) if self.prompt_format == "token_ids" else self.tokenizer.decode(
            ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        payload = {"model": self.config.model, "prompt": prompt, "max_tokens": 1, "temperature": 0,
                   "logprobs": self.config.top_logprobs, "echo": False}
        url = f"{self.config.url}/completions"
        # A token-id prompt during the probe may be refused: fail fast there, the text form is tried next.
        probing_ids = probe and self.prompt_format == "token_ids"
        choice = _first_choice(self._post(url, payload, probe=probe, retry_http=not probing_ids), self._where())
        eos_picked = False
        if not _top_entries(choice) and choice.get("finish_reason") == "stop" and self.token_map.eos_ids:
            # llama-cpp-python reports nothing when the token it picked (greedy: the likeliest) ends the text.
            # Ask again with EOS forbidden for its pick; the log-probabilities it reports stay the raw ones.
            payload["logit_bias"] = {str(i): -100 for i in self.token_map.eos_ids}
            choice = _first_choice(self._post(url, payload, probe=probe), self._where())
            eos_picked = True
        return self._parse(choice, eos_picked)

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


class ApiRowGroup:
    """Rows of one decoding run whose base log-probabilities come from the server (the remote twin of a RowBatch).

    Each row keeps its token ids and sends them whole every step: the API is stateless, the server's
    prefix cache (where it has one) saves recomputing them.
    """

    def __init__(self, base: ApiBase, streams: list[int]):
        self.base = base
        self.streams = list(streams)
        self.seqs: list[list[int]] = []
        self.finished = [False] * len(self.streams)
        self.pad_id = 0
        self.device = torch.device("cpu")

    def __len__(self) -> int:
        return len(self.streams)

    def prefill(self, prompt_ids: list[list[int]], pad_id: int, device: torch.device) -> torch.Tensor:
        """Ask for each row's first next-token distribution.  -> (R, V)"""
        self.seqs = [list(prompt_ids[s]) for s in self.streams]
        self.pad_id, self.device = pad_id, device
        return self._ask()

    def step(self, next_tokens: torch.Tensor) -> torch.Tensor:
        """Append each row's stream token (S,) and ask again.  -> (R, V)"""
        for r, s in enumerate(self.streams):
            token = int(next_tokens[s])
            self.finished[r] = self.finished[r] or token in self.base.stop_token_ids
            self.seqs[r].append(token)
        return self._ask()

    def _ask(self) -> torch.Tensor:
        live = [r for r in range(len(self)) if not self.finished[r]]
        # A finished row's logits are never read: all mass on the pad token keeps them finite.
        out = torch.full((len(self), self.base.vocab_size), float("-inf"))
        out[:, self.pad_id] = 0.0
        if live:
            out[live] = self.base.next_logprobs([self.seqs[r] for r in live])
        return out.to(self.device)


# --- command line ----------------------------------------------------------------------------------


API_FLAGS_EXCLUDED = ("max_retries", "backoff", "concurrency")
"""ApiBaseConfig fields that keep their defaults on the command line."""


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
    return (f"base API: {stats['requests']} requests for {stats['tokens']} tokens ({stats['requests_per_token']:.2f} "
            f"requests/token, {stats['retries']} retries), {stats['latency_per_token'] * 1000:.0f} ms/token")
