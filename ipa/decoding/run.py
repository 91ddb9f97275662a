"""Tailored decoding: sample from the product of a frozen base model and policy adapters (ipa.decoding.policy_math).

A decoding run's state lives in `DecodeRun`; the engine (ipa.decoding.engine) steps it, batched with every other run;
ipa.decoding.reference is the paper's loop without cache or batching, which the engine is tested against. Side-by-side
mode decodes the base's and the tailored policy's continuations together, with the same random numbers for each
pair, so at alpha = 0 the two columns are identical and otherwise differ only where the adapter moved the
distribution. Several adapters compose (`TailoredPolicy.more_adapters`): their terms add up, each with its alpha.

    >>> policy = TailoredPolicy(host, adapter=host, adapter_name="toxicity")      # doctest: +SKIP
    >>> result = generate(policy, ["The movie was"], DecodeConfig(max_new_tokens=20))  # doctest: +SKIP
    >>> result.base[0].text, result.tailored[0].text                               # doctest: +SKIP
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

import torch

from ipa.errors import UserError, check_number
from ipa.policy_adapter import MAX_ALPHA, AdapterHost
from ipa.decoding.inspection import Inspection
from ipa.decoding.policy_math import kl_divergence, next_tokens, sampling_logits, tailored_logprobs
from ipa.policy_adapter import COMBINATIONS

class DecodeError(UserError):
    """Bad decoding input (empty prompt, alpha out of range, ...); the message says what to change."""


@dataclass
class DecodeConfig:
    """How to decode. Every value is checked against LIMITS when the config is made (ipa.errors: one message
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

    @classmethod
    def for_task(cls, task, **overrides) -> "DecodeConfig":
        """A task's decoding defaults (ipa.tasks.Task.decode), with overrides: the one way every CLI, benchmark,
        training run and the page gets them.

        >>> from ipa.tasks import TASKS
        >>> DecodeConfig.for_task(TASKS["sentiment"], seed=3).max_new_tokens
        20
        """
        return cls(**{**task.decode, **overrides})

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


class RemoteBase(Protocol):
    """A base model that is not in this process: a black box that only reports top-k log-probabilities
    (ipa.decoding.remote.ApiBase, an OpenAI-compatible server). The local base is an AdapterHost, whose rows the
    engine (ipa.decoding.engine) batches with every other request's; a remote base's numbers come from requests
    that run beside the engine's steps (ipa.decoding.drafting)."""

    vocab_size: int
    stop_token_ids: set[int]
    draft_tokens: int
    """Tokens to draft locally before one request scores them (0: one request per token)."""
    top_logprobs: int
    """k: the log-probabilities the server reports per position."""

    def served_model(self, adapter: str) -> str | None:
        """The model name under which the server serves this adapter (a LoRA beside the base), or None."""

    def score(self, ids: list[int], drafted: int = 0, model: str | None = None):
        """A future of the top-k (ids, log-probabilities) at the last drafted + 1 positions of ids."""

    def row(self, ids: list[int], logprobs: list[float]) -> torch.Tensor:
        """An answer as a (V,) row, -inf outside the reported tokens."""


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
    """A black-box base (ipa.decoding.remote.ApiBase); `base` then only lends its tokenizer, EOS ids and context
    window."""
    more_adapters: tuple[tuple[str, float], ...] = ()
    """Composed adapters: (name, alpha) of further adapters on the same host, each with its own strength (the first
    adapter's is DecodeConfig.alpha). Their terms add up: a product of experts (see compose_logits)."""

    def __post_init__(self):
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
    def sizes(self) -> str:
        """The two models' sizes (model_sizes)."""
        return model_sizes(self.base, self.adapter)

    @property
    def shares_weights(self) -> bool:
        """Base and adapter rows can share one forward pass."""
        return self.adapter is self.base and self.remote_base is None


def model_sizes(base: AdapterHost, adapter: AdapterHost | None) -> str:
    """The sizes of a base and its adapter's model, as said wherever the adapter is named: 'a 42M-parameter adapter
    steering a 135M base'; for an adapter on the base's own weights, 'LoRA on the 135M base itself'."""
    if adapter is None:
        return f"the {base.size_label} base alone"
    if adapter is base:
        return f"LoRA on the {base.size_label} base itself"
    return f"a {adapter.size_label}-parameter adapter steering a {base.size_label} base"


# --- packing prompts for a forward pass ----------------------------------------------------------


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
    steps: Sequence = field(default_factory=list)
    """With inspect=True, in the final result: at each step, the most likely tokens under base, adapters and
    tailored policy (StepViews, made when read: ipa.decoding.inspection.InspectedSteps); empty otherwise."""
    base_mass: list[float] = field(default_factory=list)
    """With a remote base: at each step, the probability mass of the tokens the server reported (its top k), on
    which the step's distributions were computed; empty for a local base (all of it)."""


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
    (ipa.decoding.engine) feeds it; `decode_steps` runs one alone.

    inspect=True also records, at every step of every stream, the most likely tokens under the base, each adapter
    and the tailored policy (ipa.decoding.inspector). A base-column stream has no adapter rows, so its steps lack
    the adapters' and the tailored policy's view (InspectedSteps.partial) until `base_replay()` decodes its tokens
    again with adapter rows beside them (the page does so when a base token is opened: decoding an adapter row
    beside every base row of every request cost a quarter of a busy server's time). On a remote base, whose rows
    cannot be replayed, the base column's streams get adapter rows while inspecting.
    `uniforms` (T, pairs) replaces the seed's random numbers (ipa.decoding.inspector.branch replays those of the run
    it branches from). `replay` (one token list a stream) makes the run choose those tokens instead of drawing:
    see base_replay.
    """

    def __init__(self, policy: TailoredPolicy, prompts: list[str] | list[list[int]], config: DecodeConfig | None = None,
                 n: int = 1, columns: tuple[str, ...] = ("base", "tailored"),
                 inspect: bool = False, uniforms: torch.Tensor | None = None, replay: list[list[int]] | None = None):
        config = config if config is not None else DecodeConfig()  # a fresh one: a default instance would be shared
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
        if replay is not None and len(replay) != self.n_streams:
            raise DecodeError(f"replay needs one token list a stream ({self.n_streams}), got {len(replay)}.")
        self.replay = replay
        every_stream = inspect and (replay is not None or policy.remote_base is not None)
        self.steered = list(range(self.n_streams)) if every_stream else self.tailored
        """The streams with adapter rows: the tailored ones; every stream in an inspected replay, or when inspecting
        on a remote base."""
        self.steered_idx = torch.tensor(self.steered, dtype=torch.long, device=self.device)
        self.use_adapter = bool(self.terms) and bool(self.steered)
        self.needs_init_rows = self.use_adapter and policy.combination == "residual" and not policy.shares_weights
        self.row_kinds = ["base"] + ([kind for kind, _, _ in self.terms] if self.use_adapter else []) + (
            ["init"] if self.needs_init_rows else [])
        """Every kind of row the run needs (a remote base serves the 'base' rows)."""
        self.uniforms = uniforms
        self.inspection = None
        if inspect:
            self.inspection = Inspection(self)
        self.verify_generator = torch.Generator().manual_seed(self.seed + 1)
        """The speculative-sampling rule's own random numbers (ipa.decoding.drafting), apart from the draws'."""
        self._uniforms: list[torch.Tensor] = []
        self._verify_uniforms: list[torch.Tensor] = []
        self.eos = eos_token_ids(policy.base)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (self.eos[0] if self.eos else 0)
        S, T = self.n_streams, config.max_new_tokens
        self.completion = torch.full((S, T), self.pad_id, dtype=torch.long)
        self.mask = torch.zeros((S, T), dtype=torch.long)
        self.base_lp = torch.zeros((S, T))
        self.tailored_lp = torch.zeros((S, T))
        self.kl = torch.zeros((S, T))
        self.base_mass = torch.ones((S, T))
        self.finished = torch.zeros(S, dtype=torch.bool)
        self.next_tokens = torch.full((S,), self.pad_id, dtype=torch.long)
        self.texts = [IncrementalText(tokenizer) for _ in range(S)]
        self.token_texts: list[list[str]] = [[] for _ in range(S)]
        self.steps = 0
        self.done = False

    def step_uniforms(self, t: int) -> torch.Tensor:
        """The random numbers of step t, one a base/tailored pair (n_pairs,): the columns share them. Drawn in step
        order whoever asks first, so a run that drafts ahead (ipa.decoding.drafting) draws what one that steps
        token by token does."""
        while len(self._uniforms) <= t:
            step = len(self._uniforms)
            self._uniforms.append(torch.rand(self.n_pairs, generator=self.generator) if self.uniforms is None
                                  else self.uniforms[step])
        return self._uniforms[t]

    def verify_uniforms(self, t: int) -> torch.Tensor:
        """The speculative-sampling rule's random numbers at step t (n_pairs, 2): accept, redraw."""
        while len(self._verify_uniforms) <= t:
            self._verify_uniforms.append(torch.rand((self.n_pairs, 2), generator=self.verify_generator))
        return self._verify_uniforms[t]

    def policy_logprobs(self, logits: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Every stream's distributions from its rows' logits: the base's (S, V), the decoded policy's (S, V: the
        base's for a base stream, the tailored one for a tailored stream), the steered streams' tailored (A, V)."""
        base_logprobs = torch.log_softmax(logits["base"].float(), dim=-1)  # (S, V)
        policy_logprobs = base_logprobs.clone()
        steered_logprobs = None
        if self.use_adapter:
            base = logits["base"][self.steered_idx]
            steered_logprobs = tailored_logprobs(base, [logits[kind] for kind, _, _ in self.terms], logits.get("init", base),
                                                 [alpha for _, _, alpha in self.terms], self.policy.combination)  # (A, V)
            if len(self.steered) == len(self.tailored):  # the steered streams are the tailored ones
                policy_logprobs[self.tailored_idx] = steered_logprobs
            else:
                policy_logprobs[self.tailored_idx] = steered_logprobs[self.tailored_idx]  # every stream is steered
        return base_logprobs, policy_logprobs, steered_logprobs

    def advance(self, logits: dict[str, torch.Tensor], forced: torch.Tensor | None = None,
                base_mass: torch.Tensor | None = None) -> None:
        """Pick every stream's next token from its rows' logits (ipa.decoding.policy_math) and record it.

        forced (S,): the tokens already chosen (by a remote base's verified draft, ipa.decoding.drafting), recorded
        with these logits' numbers; base_mass (S,): the probability mass the remote base reported at this step."""
        config, t = self.config, self.steps
        base_logprobs, policy_logprobs, steered_logprobs = self.policy_logprobs(logits)
        if forced is None and self.replay is not None:
            forced = torch.tensor([tokens[t] if t < len(tokens) else self.pad_id for tokens in self.replay])
        if forced is None:
            uniforms = None if config.greedy else self.step_uniforms(t)[self.pair]
            chosen_tokens, choice_logprobs, filtered = next_tokens(policy_logprobs, config, t, self.eos, uniforms)
        else:
            choice_logprobs, filtered = sampling_logits(policy_logprobs, config, t, self.eos)
            chosen_tokens = forced.to(policy_logprobs.device)
        kl = torch.zeros(self.n_streams, device=policy_logprobs.device)  # a stream decoded from the base: 0
        if self.use_adapter:
            steered = steered_logprobs if len(self.steered) == len(self.tailored) else policy_logprobs[self.tailored_idx]
            kl[self.tailored_idx] = kl_divergence(steered, base_logprobs[self.tailored_idx])
        if self.inspection is not None:
            self.inspection.record(t, logits, base_logprobs, policy_logprobs, steered_logprobs, choice_logprobs,
                                   filtered, chosen_tokens, ~self.finished, kl)
        tokens = chosen_tokens.cpu()
        active = ~self.finished
        tokens[self.finished] = self.pad_id
        self.completion[:, t] = tokens
        self.mask[:, t] = active.long()
        chosen = tokens.to(base_logprobs.device).unsqueeze(-1)
        self.base_lp[:, t] = base_logprobs.gather(-1, chosen).squeeze(-1).cpu() * active
        self.tailored_lp[:, t] = policy_logprobs.gather(-1, chosen).squeeze(-1).cpu() * active
        self.kl[:, t] = kl.cpu() * active
        if base_mass is not None:
            self.base_mass[:, t] = base_mass.cpu()
        eos = set(self.eos)
        for s in active.nonzero().flatten().tolist():
            token = int(tokens[s])
            if token in eos:
                continue
            self.texts[s].push(token)
            self.token_texts[s].append(self.policy.tokenizer.decode([token]))
        if config.stop_at_eos and self.eos:
            self.finished |= active & torch.isin(tokens, torch.tensor(self.eos))
        if self.replay is not None:  # a replayed stream ends with its tokens
            self.finished |= torch.tensor([len(tokens) <= t + 1 for tokens in self.replay])
        self.next_tokens = tokens
        self.steps = t + 1
        self.done = bool(self.finished.all()) or self.steps == config.max_new_tokens

    def base_replay(self, streams: list[int] | None = None) -> "DecodeRun":
        """A run that decodes the base-column streams' tokens again (all of them, or `streams`), with adapter rows
        beside them and the inspector recording: its base column's steps then show what the adapters and the
        tailored policy made of the base's text (the steps this run's base column lacks). The same prompts and
        settings; its numbers are this run's up to float rounding (other rows in the batch)."""
        streams = [s for s in range(self.n_streams) if self.stream_columns[s] == "base"] if streams is None else streams
        if any(self.stream_columns[s] != "base" for s in streams):
            raise DecodeError("Only the base column's streams are replayed (the tailored ones have adapter rows).")
        return DecodeRun.replaying(self.policy, [self.stream_prompts[s] for s in streams], self.config,
                                   [self.completion[s, :int(self.mask[s].sum())].tolist() for s in streams])

    @staticmethod
    def replaying(policy: TailoredPolicy, prompts: list[str] | list[list[int]], config: DecodeConfig,
                  tokens: list[list[int]]) -> "DecodeRun":
        """The inspected base-column replay of `tokens` (one list a prompt) decoded from `prompts` with `config`."""
        return DecodeRun(policy, prompts, config, n=1, columns=("base",), inspect=True, replay=tokens)

    STATE = ("completion", "mask", "base_lp", "tailored_lp", "kl", "base_mass", "finished", "next_tokens", "token_texts",
             "steps", "done")
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
        """Every continuation so far, split by column. `final` decodes each text whole once more and adds the token
        inspector's steps (built from the whole run once, not at every streamed update)."""
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
                steps=self.inspection.views(s, length) if self.inspection is not None and final else [],
                base_mass=self.base_mass[s, :length].tolist() if self.policy.remote_base is not None else [],
            )
            (base if column == "base" else tailored).append(item)
        return DecodeResult(base, tailored, list(self.warnings), self.seed, self.steps, done=final)
