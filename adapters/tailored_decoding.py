"""Tailored decoding: sample from the product of a frozen base model and a policy adapter.

    tailored(x_t | x_<t)  ∝  p_base(x_t | x_<t) · exp(alpha · adapter_term)

with two forms of the adapter term (`combine_logits`):

- "paper"    : adapter logits, as in Lu et al. (2023): log_softmax(base) + alpha · adapter.
- "residual" : adapter logits minus the adapter's initial model's logits, so an untrained adapter
               leaves the base untouched and alpha is a clean strength knob. The default.

Several adapters compose (`TailoredPolicy.more_adapters`, `compose_logits`): their terms add up, each with its alpha.

Everything runs batched with KV caches, through the engine (adapters.engine): the base rows and adapter rows of
every stream, and of every other request decoded at the same time, share one forward pass per model, each row
with its own LoRA adapter. `DecodeRun` holds one run's sampling state; `decode_steps`, `stream`, `generate` and
`sample` run one alone. Side-by-side
mode decodes the base's and the tailored policy's continuations together, with the same random
numbers for each pair, so at alpha = 0 the two columns are identical and otherwise differ only
where the adapter moved the distribution.

    >>> policy = TailoredPolicy(host, adapter=host, adapter_name="toxicity")      # doctest: +SKIP
    >>> result = generate(policy, ["The movie was"], DecodeConfig(max_new_tokens=20))  # doctest: +SKIP
    >>> result.base[0].text, result.tailored[0].text                               # doctest: +SKIP
"""

from __future__ import annotations

import functools
import random
import threading
from dataclasses import dataclass, field
from typing import ClassVar, Iterator, Protocol

import torch
from transformers import DynamicCache, StaticCache

from adapters.checks import UserError, check_number
from adapters.policy_adapter import COMBINATIONS, MAX_ALPHA, AdapterHost

CACHES = ("dynamic", "static", "compiled")
"""KV cache kinds (TailoredPolicy.cache): "dynamic" grows by one position a step (Hugging Face's DynamicCache);
"static" is allocated once for prompt + max_new_tokens (StaticCache), so every step has the same shapes;
"compiled" is "static" with each decoding step run through torch.compile(mode="reduce-overhead"), which on a
GPU replays the step as a CUDA graph (one launch instead of hundreds). The first step of each new shape
compiles (tens of seconds), so "compiled" pays off for long runs of equal shapes: benchmarks, evaluation."""
PEFT_NO_ADAPTER = "__base__"
"""PEFT's name for the rows of a mixed batch that no adapter touches (`adapter_names=[...]`)."""
COMPILED_VARIANTS = 64
"""Compiled decoding steps kept per process (shapes × models × adapter on/off)."""
STATIC_CACHE_BUCKET = 64
"""Static caches are this many positions longer than needed at most: lengths rounded up, so that runs with
slightly different prompt lengths reuse one compiled step."""


class DecodeError(UserError):
    """Bad decoding input (empty prompt, alpha out of range, ...); the message says what to change."""


@dataclass
class DecodeConfig:
    """How to decode. Every value is checked against LIMITS when the config is made (adapters.checks: one message
    naming the field and its range for a wrong type, NaN, a fraction of a count, or a value out of range)."""

    max_new_tokens: int = 32
    """Most tokens to generate per continuation."""
    min_new_tokens: int = 0
    """EOS is forbidden before this many tokens."""
    temperature: float = 1.0
    """Sampling temperature; 0 means greedy (argmax)."""
    top_p: float = 0.9
    """Nucleus sampling: keep the smallest set of tokens whose probability reaches top_p (1 = off)."""
    top_k: int = 0
    """Keep only the k most likely tokens (0 = off)."""
    alpha: float = 1.0
    """Adapter strength: 0 = base only."""
    seed: int | None = 0
    """Random seed; None draws one (reported in the result)."""
    stop_at_eos: bool = True
    """End a continuation at an end-of-sequence token."""

    LIMITS: ClassVar[dict[str, tuple]] = {
        "max_new_tokens": (1, 4096, True), "min_new_tokens": (0, 4096, True), "temperature": (0, 10, False),
        "top_p": (0.001, 1, False), "top_k": (0, None, True), "alpha": (0, MAX_ALPHA, False),
        "seed": (0, 2**63 - 1, True),
    }
    """(lowest, highest or None, whole number) per field; subclasses with narrower ranges (the page's) replace it."""

    def __post_init__(self):
        for name, (low, high, whole) in self.LIMITS.items():
            value = getattr(self, name)
            if name == "seed" and value is None:
                continue
            setattr(self, name, check_number(value, name, low, high, whole=whole, error=DecodeError))
        if self.min_new_tokens > self.max_new_tokens:
            raise DecodeError(f"min_new_tokens must be at most max_new_tokens ({self.max_new_tokens}), got {self.min_new_tokens}.")
        if not isinstance(self.stop_at_eos, bool):
            raise DecodeError(f"stop_at_eos must be true or false, got {self.stop_at_eos!r}.")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


class RemoteRows(Protocol):
    """The base rows of one decoding run, served by a remote model (adapters.api_base.ApiRowGroup)."""

    def prefill(self, prompt_ids: list[list[int]], pad_id: int, device: torch.device) -> torch.Tensor:
        """Each row's first next-token log-probabilities.  -> (R, V), -inf outside what the server reports"""

    def step(self, next_tokens: torch.Tensor) -> torch.Tensor:
        """Append each stream's token (S,) and return the next log-probabilities.  -> (R, V)"""


class RemoteBase(Protocol):
    """A base model that is not in this process: a black box that only reports top-k log-probabilities
    (adapters.api_base.ApiBase, an OpenAI-compatible server). The local base is an AdapterHost, whose rows the
    engine (adapters.engine) batches with every other request's; a remote base serves each request's rows itself."""

    def row_group(self, streams: list[int]) -> RemoteRows:
        """The rows of a run's streams."""


@dataclass
class TailoredPolicy:
    """A frozen base and, optionally, a policy adapter to steer it.

    `adapter` is the host carrying the adapter's LoRA weights: `base` itself when the adapter sits on
    the base's weights (the embedded default), another host when the adapter's initial model is a
    different (smaller) model with the same tokenizer.
    """

    base: AdapterHost
    adapter: AdapterHost | None = None
    adapter_name: str | None = None
    combination: str = "residual"
    remote_base: RemoteBase | None = None
    """A black-box base (adapters.api_base.ApiBase); `base` then only lends its tokenizer, EOS ids and context
    window."""
    cache: str = "dynamic"
    """The local models' KV cache: one of CACHES."""
    more_adapters: tuple[tuple[str, float], ...] = ()
    """Composed adapters: (name, alpha) of further adapters on the same host, each with its own strength (the first
    adapter's is DecodeConfig.alpha). Their terms add up: a product of experts (see compose_logits)."""

    def __post_init__(self):
        if self.cache not in CACHES:
            raise DecodeError(f"Unknown cache {self.cache!r}: use one of {', '.join(CACHES)}.")
        if self.combination not in COMBINATIONS:
            raise DecodeError(f"Unknown combination {self.combination!r}: use one of {', '.join(COMBINATIONS)}.")
        if (self.adapter is None) != (self.adapter_name is None):
            raise DecodeError("Give both the adapter host and the adapter's name, or neither.")
        if self.adapter is not None:
            self.adapter._check_name(self.adapter_name)
        if self.more_adapters:
            if self.adapter is None:
                raise DecodeError("Composed adapters need a first adapter: give adapter and adapter_name.")
            self.more_adapters = tuple((name, check_number(alpha, f"alpha of adapter {name!r}", 0, MAX_ALPHA,
                                                           error=DecodeError)) for name, alpha in self.more_adapters)
            names = [self.adapter_name] + [name for name, _ in self.more_adapters]
            for name in names[1:]:
                self.adapter._check_name(name)
            twice = sorted({name for name in names if names.count(name) > 1})
            if twice:
                raise DecodeError(f"Adapter {twice[0]!r} is composed twice: give it once, with the sum of its alphas.")

    @property
    def tokenizer(self):
        return self.base.tokenizer

    @property
    def shares_weights(self) -> bool:
        """Base and adapter rows can share one forward pass."""
        return self.adapter is self.base and self.remote_base is None


# --- pure tensor functions -------------------------------------------------------------------------


def combine_logits(
    base_logits: torch.Tensor,
    adapter_logits: torch.Tensor | None,
    init_logits: torch.Tensor | None,
    alpha: float,
    combination: str = "residual",
) -> torch.Tensor:
    """Unnormalised log-probabilities of the tailored policy.  (B, V) -> (B, V)

    paper:    log_softmax(base) + alpha · adapter
    residual: log_softmax(base) + alpha · (adapter − init)

    >>> base = torch.tensor([[0.0, 1.0]]); adapter = torch.tensor([[2.0, 0.0]])
    >>> combine_logits(base, adapter, base, 0.0).equal(torch.log_softmax(base, -1))
    True
    """
    base_logprobs = torch.log_softmax(base_logits.float(), dim=-1)
    if alpha == 0 or adapter_logits is None:
        return base_logprobs
    if combination == "paper":
        return base_logprobs + alpha * adapter_logits.float()
    if init_logits is None:
        raise ValueError("The residual combination needs the adapter's initial logits.")
    return base_logprobs + alpha * (adapter_logits.float() - init_logits.float())


def compose_logits(
    base_logits: torch.Tensor,
    adapter_logits: list[torch.Tensor],
    init_logits: torch.Tensor | None,
    alphas: list[float],
    combination: str = "residual",
) -> torch.Tensor:
    """Unnormalised log-probabilities of a base steered by several adapters at once.  (B, V), k × (B, V) -> (B, V)

    residual: log_softmax(base) + Σ_i alpha_i · (adapter_i − init)
    paper:    log_softmax(base) + Σ_i alpha_i · adapter_i

    A product of experts, base × adapter_1^alpha_1 × adapter_2^alpha_2 ... The adapters sit on one initial model,
    so one init serves every term. Under the residual form each adapter contributes only what it learned, and an
    untrained one nothing. Under the paper's form each adapter's logits already hold its initial model (the base,
    by default), so k silent adapters sample from about p_base^(1 + Σ alpha_i): the base is counted once more per
    adapter, and composing sharpens the text more than any one adapter does. With one adapter this is
    combine_logits.

    >>> base = torch.tensor([[0.0, 1.0]]); a = torch.tensor([[2.0, 0.0]]); b = torch.tensor([[0.0, 3.0]])
    >>> out = compose_logits(base, [a, b], base, [1.0, 0.5])
    >>> out.allclose(torch.log_softmax(base, -1) + (a - base) + 0.5 * (b - base))
    True
    """
    base_logprobs = torch.log_softmax(base_logits.float(), dim=-1)
    if combination == "residual" and init_logits is None and any(alpha != 0 for alpha in alphas):
        raise ValueError("The residual combination needs the adapters' initial logits.")
    total = base_logprobs
    for adapter, alpha in zip(adapter_logits, alphas, strict=True):
        if alpha == 0:
            continue
        term = adapter.float() if combination == "paper" else adapter.float() - init_logits.float()
        total = total + alpha * term
    return total


NUCLEUS_CANDIDATES = (256, 4096)
"""Top-p looks for the nucleus among the 256, then 4,096 most likely tokens before it sorts the whole vocabulary: for
32 rows of 49,152 tokens a top-256 costs 3 ms where a full sort costs 50 ms, and most nuclei are small. The nucleus
is the same as a full sort's up to float rounding at its last token."""


def filter_logits(logprobs: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """Temperature, then top-k, then top-p (nucleus); removed tokens get -inf.  (B, V) -> (B, V)"""
    logits = logprobs / temperature
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        keep = torch.zeros_like(logits, dtype=torch.bool)
        normaliser = torch.logsumexp(logits, dim=-1, keepdim=True)
        todo = torch.arange(logits.shape[0], device=logits.device)
        for candidates in (*NUCLEUS_CANDIDATES, logits.shape[-1]):
            candidates = min(candidates, logits.shape[-1])
            rows = logits[todo]
            values, order = (torch.topk(rows, candidates, dim=-1) if candidates < logits.shape[-1]
                             else torch.sort(rows, dim=-1, descending=True))  # (b, C), most likely first
            probs = torch.exp(values - normaliser[todo])
            # Keep a token while the tokens ranked above it have not reached top_p; the top token always stays.
            keep_sorted = (probs.cumsum(dim=-1) - probs) < top_p
            found = ~keep_sorted[:, -1] | (candidates == logits.shape[-1])  # the nucleus ends inside the candidates
            keep[todo[found]] = torch.zeros_like(keep[todo[found]]).scatter(-1, order[found], keep_sorted[found])
            todo = todo[~found]
            if len(todo) == 0:
                break
        logits = logits.masked_fill(~keep, float("-inf"))
    return logits


def sample_coupled(logits: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF sampling in vocabulary order: rows with the same distribution and the same
    uniform pick the same token, and close distributions mostly do too.  (B, V), (B,) -> (B,)"""
    probs = torch.softmax(logits.double(), dim=-1)
    cdf = probs.cumsum(dim=-1)
    target = (uniforms.double() * cdf[:, -1]).unsqueeze(-1)
    tokens = torch.searchsorted(cdf, target).squeeze(-1)
    # Guard against landing on a zero-probability token at the very end of the CDF.
    tokens = tokens.clamp(max=logits.shape[-1] - 1)
    bad = probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) == 0
    if bad.any():
        tokens[bad] = probs[bad].argmax(dim=-1)
    return tokens


def kl_divergence(p_logprobs: torch.Tensor, q_logprobs: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per row from normalised log-probabilities.  (B, V), (B, V) -> (B,)"""
    p = p_logprobs.exp()
    terms = p * (p_logprobs - q_logprobs)
    return torch.nan_to_num(terms, nan=0.0).sum(dim=-1)


# --- batched forward passes with KV caches -----------------------------------------------------------


class _RowGroup:
    """One model run over a fixed set of rows with its own KV cache.

    A row is (stream, adapter name or None for LoRA off, optional prefix embedding). Rows of
    different lengths are padded on the left; positions follow the attention mask.
    """

    def __init__(self, host: AdapterHost, streams: list[int], names: list[str | None], prefixes: list[torch.Tensor | None],
                 cache: str = "dynamic", max_new_tokens: int = 0):
        self.host = host
        self.streams = torch.tensor(streams, dtype=torch.long)
        self.names = names
        self.prefixes = prefixes
        self.cache_kind = cache
        self.max_new_tokens = max_new_tokens
        self.cache = None
        self.mask = None
        self.next_position = None

    def __len__(self) -> int:
        return len(self.names)

    def _forward(self, compiled: bool = False, **inputs) -> torch.Tensor:
        run = _compiled_forward if compiled else _forward
        if all(name is None for name in self.names):
            with self.host.base_only() as base:
                logits = run(base, **inputs)
        elif all(name == self.names[0] for name in self.names):
            with self.host.only(self.names[0]) as adapted:
                logits = run(adapted, **inputs)
        else:
            logits = run(self.host.model, adapter_names=[name or PEFT_NO_ADAPTER for name in self.names], **inputs)
        if compiled and logits.dtype == torch.float32:
            logits = logits.clone()  # the next replay of a CUDA graph overwrites its outputs (float() copies others)
        return logits.float()

    def prefill(self, prompt_ids: list[list[int]], pad_id: int, device: torch.device) -> torch.Tensor:
        """Run the prompts; returns next-token logits (R, V)."""
        seqs = [prompt_ids[s] for s in self.streams.tolist()]
        inputs, mask, positions = pack_prompts(self.host, seqs, self.prefixes, pad_id, device)
        width = mask.shape[1]
        if self.cache_kind == "dynamic":
            self.cache = DynamicCache()
        else:
            # One allocation for the whole run (the cache counts its own writes). The attention mask covers
            # every slot from the start, left pads 0 and the rest 1: causal masking hides the slots not yet
            # written, so the mask never changes and a captured step can be replayed.
            length = -(-(width + self.max_new_tokens) // STATIC_CACHE_BUCKET) * STATIC_CACHE_BUCKET
            self.cache = StaticCache(config=self.host.model.config, max_cache_len=length)
            mask = torch.cat([mask, mask.new_ones((len(seqs), length - width))], dim=1)
        inputs.update(attention_mask=mask, position_ids=positions, past_key_values=self.cache)
        self.mask = mask
        self.next_position = positions[:, -1] + 1
        return self._forward(**inputs)

    def step(self, next_tokens: torch.Tensor) -> torch.Tensor:
        """Feed each row its stream's new token (S,); returns next-token logits (R, V)."""
        ids = next_tokens[self.streams.to(next_tokens.device)].unsqueeze(1)
        positions = self.next_position.unsqueeze(1)
        self.next_position = self.next_position + 1
        if self.cache_kind == "dynamic":
            self.mask = torch.cat([self.mask, self.mask.new_ones((len(self), 1))], dim=1)
            return self._forward(input_ids=ids, attention_mask=self.mask, position_ids=positions, past_key_values=self.cache)
        return self._forward(compiled=self.cache_kind == "compiled", input_ids=ids, attention_mask=self.mask,
                             position_ids=positions, past_key_values=self.cache)


def pack_prompts(host: AdapterHost, prompts: list[list[int]], prefixes: list[torch.Tensor | None], pad_id: int,
                 device: torch.device) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """Prompts left-padded to one width, each after its prefix embedding when it has one (a Quark reward token).

    Returns the model's input ({"input_ids": (R, L)} or {"inputs_embeds": (R, L, H)}), the attention mask (R, L)
    and the position ids (R, L), which count each row's own tokens from 0.
    """
    lengths = [len(p) + (prefix is not None) for p, prefix in zip(prompts, prefixes)]
    width = max(lengths)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for r, prompt in enumerate(prompts):
        input_ids[r, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
        mask[r, width - lengths[r]:] = 1
    input_ids, mask = input_ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    if all(prefix is None for prefix in prefixes):
        return {"input_ids": input_ids}, mask, positions
    embeds = host.input_embeddings()(input_ids)
    for r, prefix in enumerate(prefixes):
        if prefix is not None:
            embeds[r, width - lengths[r]] = prefix.to(embeds.dtype)
    return {"inputs_embeds": embeds}, mask, positions


def _forward(model, **inputs) -> torch.Tensor:
    """Next-token logits (R, V) of one forward pass that extends the KV cache in `inputs`."""
    return model(**inputs, use_cache=True, logits_to_keep=1).logits[:, -1, :]


@functools.cache
def _compiled_step():
    return torch.compile(_forward, mode="reduce-overhead", dynamic=False)


def _compiled_forward(model, **inputs) -> torch.Tensor:
    """_forward through torch.compile(mode="reduce-overhead"): CUDA graphs on a GPU. One per process, so that
    every decoding run reuses what earlier runs compiled (a new shape compiles again). Every shape, model and
    adapter switch is one more compiled variant: past dynamo's default limit of 8 it would quietly run uncompiled,
    so the limit is raised for these calls only (not for the rest of the process)."""
    import torch._dynamo.config

    with torch._dynamo.config.patch(recompile_limit=max(torch._dynamo.config.recompile_limit, COMPILED_VARIANTS)):
        return _compiled_step()(model, **inputs)


class _Experts:
    """Plans the row groups for a decoding run and returns base, adapter and init logits per step.

    `terms` are the run's adapters, (row kind, adapter name) each ('adapter' for the first; see DecodeRun.terms);
    `steered_streams` the streams that get adapter rows."""

    def __init__(self, policy: TailoredPolicy, n_streams: int, steered_streams: list[int],
                 terms: list[tuple[str, str]], max_new_tokens: int = 0):
        self.policy = policy
        self.tailored = steered_streams
        group = functools.partial(_RowGroup, cache=policy.cache, max_new_tokens=max_new_tokens)
        base, adapter = policy.base, policy.adapter
        all_streams = list(range(n_streams))
        self.use_adapter = bool(terms) and adapter is not None and bool(steered_streams)
        prefixes = {name: adapter.reward_token_embedding(name) for _, name in terms} if self.use_adapter else {}
        need_init = self.use_adapter and policy.combination == "residual" and not policy.shares_weights
        k = len(steered_streams)
        if policy.remote_base is not None:
            base_group = policy.remote_base.row_group(all_streams)
        else:
            base_group = group(base, all_streams, [None] * n_streams, [None] * n_streams)
        if not self.use_adapter:
            self.groups = [base_group]
            self.slices = {"base": (0, slice(0, n_streams))}
        elif policy.shares_weights and (base.base_model.device.type == "cuda" or policy.cache == "compiled"):
            # On a GPU, small models are bound by kernel launches, and PEFT's mixed batches add index
            # copies to every LoRA layer: plain forwards (adapter off, each adapter on) are faster. Compiled
            # steps need them too: a mixed batch registers PEFT hooks inside the forward, a graph break.
            self.groups = [base_group] + [group(adapter, steered_streams, [name] * k, [prefixes[name]] * k)
                                          for _, name in terms]
            self.slices = {"base": (0, slice(0, n_streams))}
            self.slices.update({kind: (1 + i, slice(0, k)) for i, (kind, _) in enumerate(terms)})
        elif policy.shares_weights:
            # On the CPU, one forward reads the weights once: every stream's base row, then each steered
            # stream's row for each adapter. The adapters sit on the base's weights, so base rows are also init rows.
            rows, names, row_prefixes = all_streams, [None] * n_streams, [None] * n_streams
            for _, name in terms:
                rows, names, row_prefixes = rows + steered_streams, names + [name] * k, row_prefixes + [prefixes[name]] * k
            self.groups = [group(base, rows, names, row_prefixes)]
            self.slices = {"base": (0, slice(0, n_streams))}
            self.slices.update({kind: (0, slice(n_streams + i * k, n_streams + (i + 1) * k))
                                for i, (kind, _) in enumerate(terms)})
        else:
            rows, names, row_prefixes = [], [], []
            for _, name in terms:
                rows, names, row_prefixes = rows + steered_streams, names + [name] * k, row_prefixes + [prefixes[name]] * k
            if need_init:
                rows, names, row_prefixes = rows + steered_streams, names + [None] * k, row_prefixes + [None] * k
            self.groups = [base_group, group(adapter, rows, names, row_prefixes)]
            self.slices = {"base": (0, slice(0, n_streams))}
            self.slices.update({kind: (1, slice(i * k, (i + 1) * k)) for i, (kind, _) in enumerate(terms)})
            if need_init:
                self.slices["init"] = (1, slice(len(terms) * k, (len(terms) + 1) * k))

    def _split(self, outputs: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        logits = {key: outputs[g][s] for key, (g, s) in self.slices.items()}
        if self.use_adapter and "init" not in logits:
            logits["init"] = logits["base"][self.tailored]
        return logits

    def prefill(self, prompt_ids: list[list[int]], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
        return self._split([g.prefill(prompt_ids, pad_id, device) for g in self.groups])

    def step(self, next_tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        return self._split([g.step(next_tokens) for g in self.groups])


# --- the decoding loop -------------------------------------------------------------------------------


@dataclass
class Completion:
    """One continuation, with per-token log-probabilities (temperature 1, no truncation)."""

    prompt_index: int
    sample_index: int
    policy: str
    """'base' or 'tailored'."""
    token_ids: list[int]
    text: str
    finished: bool
    """It ended with an end-of-sequence token."""
    base_logprobs: list[float]
    """log p_base(token) at each step."""
    tailored_logprobs: list[float]
    """log p_tailored(token) at each step (the base's for the base column)."""
    kl: list[float]
    """KL(tailored || base) at each step: how far the adapter moved the distribution (0 for the base column)."""
    tokens: list[str] = field(default_factory=list)
    """Each generated token as text (EOS left out)."""
    steps: list = field(default_factory=list)
    """With inspect=True: at each step, the most likely tokens under base, adapters and tailored policy
    (adapters.inspector.StepView); empty otherwise."""


@dataclass
class DecodeResult:
    """Continuations of every prompt: `base[i]`, `tailored[i]` for stream i = prompt · n + sample."""

    base: list[Completion] = field(default_factory=list)
    tailored: list[Completion] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seed: int = 0
    steps: int = 0
    done: bool = False
    """The run has ended (every continuation finished or max_new_tokens reached)."""


@dataclass
class SampleBatch:
    """Token tensors of a decoding run, for training: S streams."""

    prompt_ids: list[list[int]]
    """Prompt token ids per stream (after truncation)."""
    completion_ids: torch.Tensor
    """(S, T) generated ids, pad after the end."""
    completion_mask: torch.Tensor
    """(S, T) 1 for generated tokens (EOS included), 0 after."""
    base_logprobs: torch.Tensor
    """(S, T) log p_base of each generated token."""
    tailored_logprobs: torch.Tensor
    """(S, T) log p_tailored of each generated token."""
    kl: torch.Tensor
    """(S, T) KL(tailored || base) at each step."""
    columns: list[str]
    """'base' or 'tailored' per stream."""


def encode_prompts(tokenizer, prompts: list[str], max_prompt_tokens: int) -> tuple[list[list[int]], list[str]]:
    """Token ids per prompt, truncated from the left to max_prompt_tokens; warnings say so."""
    if isinstance(prompts, str):
        prompts = [prompts]
    if not prompts:
        raise DecodeError("No prompt given.")
    ids, warnings = [], []
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise DecodeError(f"Prompt {i + 1} is a {type(prompt).__name__}, not text.")
        if not prompt.strip():
            raise DecodeError("The prompt is empty: type some text to continue." if len(prompts) == 1 else f"Prompt {i + 1} is empty.")
        tokens = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        if len(tokens) > max_prompt_tokens:
            warnings.append(
                f"Prompt {i + 1} has {len(tokens)} tokens, more than the {max_prompt_tokens} that fit in the "
                f"context window with the requested new tokens: kept its last {max_prompt_tokens} tokens."
            )
            tokens = tokens[-max_prompt_tokens:]
        ids.append(tokens)
    return ids, warnings


def eos_token_ids(host: AdapterHost) -> list[int]:
    """End-of-sequence ids: the generation config's and the tokenizer's."""
    ids = host.base_model.generation_config.eos_token_id
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    if host.tokenizer.eos_token_id is not None and host.tokenizer.eos_token_id not in ids:
        ids.append(host.tokenizer.eos_token_id)
    return ids


def context_window(host: AdapterHost) -> int:
    return int(getattr(host.base_model.config, "max_position_embeddings", 2048) or 2048)


class IncrementalText:
    """A continuation's text, decoded as tokens arrive without re-decoding it all each time.

    Keeps a window of a few tokens: the text of window + new token, minus the text of the window alone, is what
    the new token added (byte-level tokens can split a character: nothing is emitted until it is whole), as
    vLLM's and TGI's detokenizers do.
    """

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.text = ""
        self.start = 0
        """The window: ids[start:read] were already turned into text."""
        self.read = 0

    def push(self, token_id: int) -> str:
        """Add a token; returns the text it completed ('' while a character is still incomplete)."""
        self.ids.append(token_id)
        before = self.tokenizer.decode(self.ids[self.start:self.read], skip_special_tokens=True)
        after = self.tokenizer.decode(self.ids[self.start:], skip_special_tokens=True)
        if len(after) <= len(before) or after.endswith(REPLACEMENT_CHARACTER):
            return ""
        added = after[len(before):]
        self.text += added
        self.start, self.read = self.read, len(self.ids)
        return added


REPLACEMENT_CHARACTER = "\ufffd"


class DecodeRun:
    """The sampling state of one decoding run: streams, their tokens and log-probabilities so far.

    Streams are ordered column-major: column c, prompt p, sample j -> stream c·P·n + p·n + j. Each step takes the
    next-token logits of its rows ({'base': (S, V), 'adapter': (k, V), 'init': (k, V)} for the k tailored streams;
    composed adapters add 'adapter2', 'adapter3', ...: see `terms`) and picks every stream's next token. The engine
    (adapters.engine) feeds it; `decode_steps` runs one alone.

    inspect=True also records, at every step of every stream, the most likely tokens under the base, each adapter
    and the tailored policy (adapters.inspector): the base column's streams then get adapter rows too, so that
    both columns can be inspected. `uniforms` (T, pairs) replaces the seed's random numbers (adapters.inspector.branch
    replays those of the run it branches from).
    """

    def __init__(self, policy: TailoredPolicy, prompts: list[str] | list[list[int]], config: DecodeConfig = DecodeConfig(),
                 n: int = 1, columns: tuple[str, ...] = ("base", "tailored"), max_new_tokens_cap: int | None = None,
                 inspect: bool = False, uniforms: torch.Tensor | None = None):
        if n < 1:
            raise DecodeError(f"n (samples per prompt) must be at least 1, got {n}.")
        if not columns or any(c not in ("base", "tailored") for c in columns):
            raise DecodeError(f"columns must name 'base' and/or 'tailored', got {columns}.")
        self.policy, self.config, self.n, self.columns = policy, config, n, columns
        tokenizer = policy.tokenizer
        names = [policy.adapter_name] + [name for name, _ in policy.more_adapters] if policy.adapter is not None else []
        has_prefix = any(policy.adapter.reward_token_embedding(name) is not None for name in names)
        max_prompt = context_window(policy.base) - config.max_new_tokens - int(has_prefix)
        if max_prompt < 1:
            raise DecodeError(f"max_new_tokens ({config.max_new_tokens}) leaves no room for the prompt in the "
                              f"{context_window(policy.base)}-token context window.")
        if prompts and isinstance(prompts[0], list):
            if any(len(p) == 0 for p in prompts):
                raise DecodeError("A prompt is empty.")
            prompt_ids, self.warnings = [list(p)[-max_prompt:] for p in prompts], []
        else:
            prompt_ids, self.warnings = encode_prompts(tokenizer, prompts, max_prompt)
        self.prompt_ids = prompt_ids
        """Each prompt's token ids, as decoded (cut to the context window)."""
        self.seed = config.seed if config.seed is not None else random.randrange(2**31)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.device = policy.base.base_model.device
        self.n_pairs = len(prompt_ids) * n
        self.stream_prompts = [ids for ids in prompt_ids for _ in range(n)] * len(columns)
        self.stream_columns = [c for c in columns for _ in range(self.n_pairs)]
        self.n_streams = len(self.stream_prompts)
        self.pair = torch.arange(self.n_streams) % self.n_pairs
        self.tailored = [s for s, c in enumerate(self.stream_columns) if c == "tailored"]
        self.tailored_idx = torch.tensor(self.tailored, dtype=torch.long, device=self.device)
        self.terms: list[tuple[str, str, float]] = []
        """(row kind, adapter name, alpha) of each adapter at work: the first's kind is 'adapter', the composed ones'
        'adapter2', 'adapter3', ... An adapter at alpha 0 gets no rows."""
        if policy.adapter is not None:
            strengths = [(policy.adapter_name, config.alpha)] + list(policy.more_adapters)
            self.terms = [("adapter" if i == 0 else f"adapter{i + 1}", name, alpha)
                          for i, (name, alpha) in enumerate(strengths) if alpha != 0]
        self.steered = list(range(self.n_streams)) if inspect else self.tailored
        """The streams with adapter rows: the tailored ones, or every stream when inspecting."""
        self.steered_idx = torch.tensor(self.steered, dtype=torch.long, device=self.device)
        self.use_adapter = bool(self.terms) and bool(self.steered)
        self.needs_init_rows = self.use_adapter and policy.combination == "residual" and not policy.shares_weights
        self.row_kinds = ["base"] + ([kind for kind, _, _ in self.terms] if self.use_adapter else []) + (
            ["init"] if self.needs_init_rows else [])
        """Every kind of row the run needs (a remote base serves the 'base' rows)."""
        self.uniforms = uniforms
        self.inspection = None
        if inspect:
            from adapters.inspector import Inspection

            self.inspection = Inspection(self)
        self.eos = eos_token_ids(policy.base)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos[0]
        S, T = self.n_streams, config.max_new_tokens
        self.completion = torch.full((S, T), self.pad_id, dtype=torch.long)
        self.mask = torch.zeros((S, T), dtype=torch.long)
        self.base_lp = torch.zeros((S, T))
        self.tailored_lp = torch.zeros((S, T))
        self.kl = torch.zeros((S, T))
        self.finished = torch.zeros(S, dtype=torch.bool)
        self.next_tokens = torch.full((S,), self.pad_id, dtype=torch.long)
        self.texts = [IncrementalText(tokenizer) for _ in range(S)]
        self.token_texts: list[list[str]] = [[] for _ in range(S)]
        self.steps = 0
        self.done = False

    def streams_of(self, kind: str) -> torch.Tensor:
        """The streams whose rows of this kind exist, in row order: every stream's base row, steered streams' others."""
        return torch.arange(self.n_streams) if kind == "base" else torch.tensor(self.steered, dtype=torch.long)

    def advance(self, logits: dict[str, torch.Tensor]) -> None:
        """Pick every stream's next token from its rows' logits and record it."""
        config, t = self.config, self.steps
        base_logprobs = torch.log_softmax(logits["base"].float(), dim=-1)  # (S, V)
        policy_logprobs = base_logprobs.clone()
        steered_logprobs = None
        if self.use_adapter:
            init = logits.get("init", logits["base"][self.steered_idx])
            if self.policy.more_adapters:
                combined = compose_logits(logits["base"][self.steered_idx], [logits[kind] for kind, _, _ in self.terms],
                                          init, [alpha for _, _, alpha in self.terms], self.policy.combination)
            else:
                combined = combine_logits(logits["base"][self.steered_idx], logits["adapter"], init, config.alpha,
                                          self.policy.combination)
            steered_logprobs = torch.log_softmax(combined, dim=-1)  # (A, V) for the steered streams
            if self.inspection is None:  # the steered streams are the tailored ones
                policy_logprobs[self.tailored_idx] = steered_logprobs
            else:
                policy_logprobs[self.tailored_idx] = steered_logprobs[self.tailored_idx]  # every stream is steered
        choice_logprobs = policy_logprobs
        if t < config.min_new_tokens and self.eos:
            choice_logprobs = policy_logprobs.clone()
            choice_logprobs[:, self.eos] = float("-inf")
        filtered = None
        if config.greedy:
            next_tokens = choice_logprobs.argmax(dim=-1)
        else:
            filtered = filter_logits(choice_logprobs, config.temperature, config.top_k, config.top_p)
            drawn = torch.rand(self.n_pairs, generator=self.generator) if self.uniforms is None else self.uniforms[t]
            uniforms = drawn[self.pair].to(filtered.device)
            next_tokens = sample_coupled(filtered, uniforms)
        if self.inspection is not None:
            self.inspection.record(t, logits, base_logprobs, steered_logprobs, choice_logprobs, filtered,
                                   next_tokens, ~self.finished)
        next_tokens = next_tokens.cpu()
        active = ~self.finished
        next_tokens[self.finished] = self.pad_id
        self.completion[:, t] = next_tokens
        self.mask[:, t] = active.long()
        chosen = next_tokens.to(base_logprobs.device).unsqueeze(-1)
        self.base_lp[:, t] = base_logprobs.gather(-1, chosen).squeeze(-1).cpu() * active
        self.tailored_lp[:, t] = policy_logprobs.gather(-1, chosen).squeeze(-1).cpu() * active
        self.kl[:, t] = kl_divergence(policy_logprobs, base_logprobs).cpu() * active
        eos = set(self.eos)
        for s in active.nonzero().flatten().tolist():
            token = int(next_tokens[s])
            if token in eos:
                continue
            self.texts[s].push(token)
            self.token_texts[s].append(self.policy.tokenizer.decode([token]))
        if config.stop_at_eos and self.eos:
            self.finished |= active & torch.isin(next_tokens, torch.tensor(self.eos))
        self.next_tokens = next_tokens
        self.steps = t + 1
        self.done = bool(self.finished.all()) or self.steps == config.max_new_tokens

    STATE = ("completion", "mask", "base_lp", "tailored_lp", "kl", "finished", "next_tokens", "token_texts", "steps",
             "done")
    """What decoding changes in a run (with its texts and inspection records): see state()."""

    def state(self) -> dict:
        """Where decoding stands, as plain data (CPU tensors, lists): what crosses back from a process that decoded
        a copy of this run (a ZeroGPU call, app.scheduler), for restore() to bring this run to the same point."""
        return {**{name: getattr(self, name) for name in self.STATE},
                "texts": [(t.ids, t.text, t.start, t.read) for t in self.texts],
                "inspection": self.inspection.records if self.inspection is not None else None}

    def restore(self, state: dict) -> None:
        """Take over the state() of a copy of this run decoded elsewhere; result() then reads as if decoded here."""
        for name in self.STATE:
            setattr(self, name, state[name])
        for text, (ids, value, start, read) in zip(self.texts, state["texts"], strict=True):
            text.ids, text.text, text.start, text.read = ids, value, start, read
        if self.inspection is not None:
            self.inspection.records = state["inspection"]

    def batch(self) -> SampleBatch:
        """The token tensors so far (for training)."""
        t = self.steps
        return SampleBatch(self.stream_prompts, self.completion[:, :t], self.mask[:, :t], self.base_lp[:, :t],
                           self.tailored_lp[:, :t], self.kl[:, :t], self.stream_columns)

    def result(self, final: bool = False) -> DecodeResult:
        """Every continuation so far, split by column. `final` decodes each text whole once more."""
        base, tailored = [], []
        for s, column in enumerate(self.stream_columns):
            length = int(self.mask[s].sum())
            ids = self.completion[s, :length].tolist()
            finished = bool(ids) and ids[-1] in self.eos
            pair = s % self.n_pairs
            text = self.texts[s].text
            if final:
                text = self.policy.tokenizer.decode(ids[:-1] if finished else ids, skip_special_tokens=True)
            item = Completion(
                prompt_index=pair // self.n, sample_index=pair % self.n, policy=column, token_ids=ids, text=text,
                finished=finished, base_logprobs=self.base_lp[s, :length].tolist(),
                tailored_logprobs=self.tailored_lp[s, :length].tolist(), kl=self.kl[s, :length].tolist(),
                tokens=list(self.token_texts[s]),
                steps=self.inspection.views(s, length) if self.inspection is not None else [],
            )
            (base if column == "base" else tailored).append(item)
        return DecodeResult(base, tailored, list(self.warnings), self.seed, self.steps, done=final)


@torch.inference_mode()
def decode_steps(
    policy: TailoredPolicy,
    prompts: list[str] | list[list[int]],
    config: DecodeConfig = DecodeConfig(),
    n: int = 1,
    columns: tuple[str, ...] = ("base", "tailored"),
    inspect: bool = False,
) -> Iterator[DecodeRun]:
    """The decoding loop of one run alone. Yields the run after every generated token.

    prompts: strings (tokenised without special tokens) or lists of token ids.
    columns: which policies to decode: ('base',), ('tailored',) or both, side by side.
    inspect: record the token inspector's data (Completion.steps).
    The default cache runs through the engine (every row in one forward pass); the static and compiled caches
    run fixed row groups, so that each step has the same shapes.
    """
    yield from run_steps(DecodeRun(policy, prompts, config, n, columns, inspect=inspect))


@torch.inference_mode()
def run_steps(run: DecodeRun) -> Iterator[DecodeRun]:
    """decode_steps for a run already made (with its own random numbers, for instance)."""
    from adapters.engine import Engine, Request

    policy, config = run.policy, run.config
    if policy.cache == "dynamic":
        engine = Engine.for_policy(policy)
        request = Request(run)
        engine.submit(request)
        while not run.done:
            engine.step()
            yield run
        return
    terms = [(kind, name) for kind, name, _ in run.terms] if run.use_adapter else []
    experts = _Experts(policy, run.n_streams, run.steered, terms, config.max_new_tokens)
    logits = experts.prefill(run.stream_prompts, run.pad_id, run.device)
    while True:
        run.advance(logits)
        yield run
        if run.done:
            return
        logits = experts.step(run.next_tokens.to(run.device))


def stream(
    policy: TailoredPolicy,
    prompts: list[str],
    config: DecodeConfig = DecodeConfig(),
    n: int = 1,
    columns: tuple[str, ...] = ("base", "tailored"),
    every: int = 1,
    inspect: bool = False,
) -> Iterator[DecodeResult]:
    """Yield a DecodeResult with the text so far every `every` tokens, and once more at the end (done=True)."""
    run = None
    for run in decode_steps(policy, prompts, config, n, columns, inspect):
        if run.steps % every == 0 and not run.done:
            yield run.result()
    yield run.result(final=True)


def generate(
    policy: TailoredPolicy,
    prompts: list[str],
    config: DecodeConfig = DecodeConfig(),
    n: int = 1,
    columns: tuple[str, ...] = ("base", "tailored"),
    inspect: bool = False,
) -> DecodeResult:
    """Decode to the end and return every continuation (side by side by default); inspect=True fills each
    Completion's `steps` for the token inspector (adapters.inspector)."""
    result = None
    for result in stream(policy, prompts, config, n, columns, every=config.max_new_tokens + 1, inspect=inspect):
        pass
    return result


def sample(
    policy: TailoredPolicy,
    prompts: list[str] | list[list[int]],
    config: DecodeConfig = DecodeConfig(),
    n: int = 1,
    columns: tuple[str, ...] = ("tailored",),
    stop: threading.Event | None = None,
) -> SampleBatch | None:
    """Decode to the end and return token tensors (for training); None if `stop` was set meanwhile (checked
    every token, so that a training run stops within a decoding step)."""
    run = None
    for run in decode_steps(policy, prompts, config, n, columns):
        if stop is not None and stop.is_set():
            return None
    return run.batch()
