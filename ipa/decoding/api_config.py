"""Where a black-box base model is served and how to call it (ipa.decoding.remote calls it): a config of its own,
light to import, so that the playground's settings (app.config) nest it without loading torch.

    >>> ApiBaseConfig(url="http://127.0.0.1:8000/v1/", model="smollm2").url
    'http://127.0.0.1:8000/v1'
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ipa.errors import UserError

MAX_DRAFT_TOKENS = 16


class ApiBaseError(UserError):
    """The API base failed (server down, timeout, HTTP error, malformed answer, foreign tokenizer); the message says what to do."""


@dataclass
class ApiBaseConfig:
    """Where the black-box base is served and how to call it."""

    url: str = field(default="http://127.0.0.1:8000/v1", metadata={"flag": "base-api"})
    """Tailor a model served at this OpenAI-style URL, e.g. http://127.0.0.1:8000/v1 (requests go to
    {url}/completions); the local base model (--base; the page's --preset) then only lends its tokenizer and carries
    the adapter."""
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
    """Requests in flight at once (every user's rows together); they run on a thread pool, off the decoding step."""
    served_adapters: str = field(default="", metadata={"flag": "base-api-adapters"})
    """Adapters the server also serves, as LoRA models (vLLM: --enable-lora --lora-modules NAME=DIR): NAME or
    NAME=SERVED_NAME, comma-separated. Their rows then come from the server too (no drafting), each adapter's top k
    combined with the base's on the union of their tokens (policy_math.topk_union)."""
    draft_tokens: int = field(default=4, metadata={"flag": "draft-tokens"})
    """Tokens the local tailored policy drafts before one request scores them all (prompt_logprobs or echo);
    0 asks the server once per token. A server that cannot score a prompt gets one request per token anyway."""

    def __post_init__(self):
        if not self.url.startswith(("http://", "https://")):
            raise ApiBaseError(f"--base-api must be an http(s) URL such as http://127.0.0.1:8000/v1, got {self.url!r}.")
        self.url = self.url.rstrip("/")
        if not self.model:
            raise ApiBaseError("Name the served model with --base-api-model (the name the server lists under /v1/models).")
        if self.top_logprobs < 1:
            raise ApiBaseError(f"--top-logprobs must be at least 1, got {self.top_logprobs}.")
        if not isinstance(self.draft_tokens, int) or not 0 <= self.draft_tokens <= MAX_DRAFT_TOKENS:
            raise ApiBaseError(f"--draft-tokens must be a whole number from 0 to {MAX_DRAFT_TOKENS}, got {self.draft_tokens!r}.")
        self.served: dict[str, str] = {}
        """Local adapter name -> the model name the server serves it under (served_adapters, parsed)."""
        for item in filter(None, (part.strip() for part in self.served_adapters.split(","))):
            name, _, served = item.partition("=")
            if not name.strip() or (_ and not served.strip()):
                raise ApiBaseError(f"--base-api-adapters takes NAME or NAME=SERVED_NAME, comma-separated; got {item!r}.")
            self.served[name.strip()] = served.strip() or name.strip()
        if self.timeout <= 0 or self.max_retries < 0 or self.backoff < 0 or self.concurrency < 1:
            raise ApiBaseError("timeout and concurrency must be positive, max_retries and backoff at least 0.")
        if self.api_key_env and not os.environ.get(self.api_key_env):
            raise ApiBaseError(f"--api-key-env names {self.api_key_env}, but that environment variable is not set.")


API_FLAGS_EXCLUDED = ("max_retries", "backoff", "concurrency")
"""ApiBaseConfig fields that keep their defaults on the command line."""
