"""The token inspector: why was this token chosen, and what if another had been?

At every step of a decoding run with inspect=True (`generate(..., inspect=True)`, `DecodeRun(..., inspect=True)`),
each stream records the most likely tokens under three distributions, taken from the very tensors the run sampled
from (no second forward pass):

- base:     p_base, the frozen model;
- adapter:  each adapter's own next-token distribution, softmax(adapter logits): what the adapter model would write
            alone. Chosen over the adapter term's softmax(alpha · (adapter − init)) because a user can read it: its
            top tokens are words that fit the text, where the term's top tokens are mostly rare tokens whose tiny
            base probability the adapter happened to raise most. It also places the tailored policy: with the
            adapter on the base's weights (the residual default), tailored ∝ base^(1 − alpha) · adapter^alpha, so
            at alpha = 1 tailored *is* the adapter's distribution, and at 0.5 it sits halfway between (in log space);
- tailored: the product of experts the tailored column samples from (temperature 1, before top-k / top-p);

plus `sampled`, each token's probability in the distribution it was actually drawn from (after min_new_tokens'
EOS ban, temperature, top-k and top-p; greedy: 1 for the argmax), and the KL(tailored ‖ base) at that step.
Streams of the base column have no adapter rows (each would cost a row a step for every request): their steps list
the base's tokens only (InspectedSteps.partial) until `DecodeRun.base_replay` (or `DecodeRun.replaying`) decodes
their tokens again with the adapters beside them; then they show what the adapter and the tailored policy would
have made of the base's text (the base column still samples from the base). `generate(..., inspect=True)` replays
them before it returns; the page replays a base sample when one of its tokens is opened.

`branch` continues a completion from one of its steps with another token, both columns, with the random numbers
of the run it came from: choosing the token that was chosen gives back the same text, and the same choice
always gives the same continuation.

    >>> result = generate(policy, ["The fans"], DecodeConfig(max_new_tokens=16), inspect=True)  # doctest: +SKIP
    >>> step = result.tailored[0].steps[3]                                                      # doctest: +SKIP
    >>> [(t.text, round(t.tailored, 2), round(t.base, 2)) for t in step.tailored[:3]]           # doctest: +SKIP
    >>> other = branch(policy, "The fans", result, "tailored", 0, 3, step.base[0].token_id,     # doctest: +SKIP
    ...                DecodeConfig(max_new_tokens=16))
    >>> other.text("tailored"), other.text("base")                                              # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from ipa.decoding.run import Completion, DecodeConfig, DecodeError, DecodeResult, DecodeRun, TailoredPolicy, eos_token_ids

from ipa.decoding.engine import run_steps


@dataclass
class Branch:
    """A continuation taken from a step of another with a token of the user's choice, both columns."""

    prefix_ids: list[int]
    """The completion's tokens before the step, then the chosen token."""
    result: DecodeResult
    """What each column wrote after the prefix (one completion per column)."""
    tokenizer: object = field(repr=False, default=None)

    def text(self, column: str) -> str:
        """The whole continuation of a column: prefix, then what it wrote."""
        completion = getattr(self.result, column)[0]
        ids = completion.token_ids[:-1] if completion.finished else completion.token_ids
        return self.tokenizer.decode(self.prefix_ids + ids, skip_special_tokens=True)


def branch(policy: TailoredPolicy, prompt: str | list[int], result: DecodeResult, column: str, index: int, step: int,
           token_id: int, config: DecodeConfig, inspect: bool = False) -> Branch:
    """Continue `getattr(result, column)[index]` (decoded from `prompt` with `config`) from its step `step`, with
    `token_id` there instead of the token it chose; base and tailored columns both continue from that prefix, up to
    the original max_new_tokens.

    Each continuation uses the random numbers the original run drew for that completion's pair at the following
    steps, so choosing the token that was chosen gives back the original text (up to float rounding), and the same
    choice always gives the same text.
    """
    prefix, run = branch_run(policy, prompt, result, column, index, step, token_id, config, inspect)
    if run is None:
        return ended_branch(policy, prefix, result)
    for run in run_steps(run):
        pass
    return Branch(prefix, run.result(final=True), policy.tokenizer)


def branch_run(policy: TailoredPolicy, prompt: str | list[int], result: DecodeResult, column: str, index: int, step: int,
               token_id: int, config: DecodeConfig, inspect: bool = False) -> tuple[list[int], DecodeRun | None]:
    """`branch`'s checks and its run, not yet decoded (for a caller that decodes it elsewhere, e.g. the page's
    scheduler): (prefix ids, the run), the run None when nothing is left to write (`ended_branch`)."""
    if column not in ("base", "tailored"):
        raise DecodeError(f"column must be 'base' or 'tailored', got {column!r}.")
    completions = getattr(result, column)
    if not 0 <= index < len(completions):
        raise DecodeError(f"There is no {column} continuation {index}: the result has {len(completions)}.")
    completion = completions[index]
    if not 0 <= step < len(completion.token_ids):
        raise DecodeError(f"step must be from 0 to {len(completion.token_ids) - 1} (the continuation's tokens), got {step}.")
    vocabulary = len(policy.tokenizer)
    if not 0 <= token_id < vocabulary:
        raise DecodeError(f"token_id must be a token of the vocabulary (0 to {vocabulary - 1}), got {token_id}.")
    config = dataclasses.replace(config, seed=result.seed)
    # The prompt's ids as the original run had them (the same truncation to the context window).
    prompt_ids = DecodeRun(policy, [prompt], config, columns=("base",)).stream_prompts[0]
    prefix = completion.token_ids[:step] + [token_id]
    remaining = config.max_new_tokens - len(prefix)
    columns = tuple(c for c in ("base", "tailored") if getattr(result, c))
    ends = token_id in eos_token_ids(policy.base) and config.stop_at_eos
    if remaining == 0 or ends:
        return prefix, None
    pairs = len(result.base or result.tailored)
    samples = 1 + max(c.sample_index for c in completions)
    pair = completion.prompt_index * samples + completion.sample_index
    uniforms = None
    if not config.greedy:  # the original run drew one uniform per pair and step
        generator = torch.Generator().manual_seed(result.seed)
        drawn = torch.stack([torch.rand(pairs, generator=generator) for _ in range(config.max_new_tokens)])  # (T, pairs)
        uniforms = drawn[len(prefix):, pair:pair + 1]  # (remaining, 1)
    sub_config = dataclasses.replace(config, max_new_tokens=remaining,
                                     min_new_tokens=max(0, config.min_new_tokens - len(prefix)))
    return prefix, DecodeRun(policy, [prompt_ids + prefix], sub_config, columns=columns, inspect=inspect, uniforms=uniforms)


def ended_branch(policy: TailoredPolicy, prefix: list[int], result: DecodeResult) -> Branch:
    """A branch with nothing left to write (its token ends the text, or it was the last step): empty columns."""
    empty = {c: [Completion(0, 0, c, [], "", True, [], [], [])] if getattr(result, c) else [] for c in ("base", "tailored")}
    return Branch(prefix, DecodeResult(empty["base"], empty["tailored"], seed=result.seed, done=True), policy.tokenizer)
