"""What the token inspector records at each step of a run with inspect=True (ipa.decoding.inspector says what
each distribution means): the most likely tokens under base, each adapter and the tailored policy, with their
probabilities, taken from the very tensors the run sampled from. DecodeRun makes one; its views come with the
run's final result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ipa.decoding.policy_math import kl_divergence

TOP_K = 10
"""Tokens listed per distribution and step."""


@dataclass
class TokenProbs:
    """One token at one step, with its probability under each distribution."""

    token_id: int
    text: str
    base: float
    """p_base(token)."""
    tailored: float
    """p_tailored(token): the product of experts, temperature 1, before top-k / top-p."""
    sampled: float
    """Its probability in the distribution the stream drew from (temperature, top-k, top-p applied)."""
    adapters: dict[str, float] = field(default_factory=dict)
    """Each adapter's own probability of the token, by adapter name ({} when no adapter is at work)."""


@dataclass
class StepView:
    """What the inspector shows for one step of one continuation."""

    step: int
    chosen: TokenProbs
    """The token the stream chose."""
    kl: float
    """KL(tailored ‖ base) at this step: how far the adapters moved the distribution."""
    base: list[TokenProbs]
    """The TOP_K most likely tokens under the base, most likely first."""
    tailored: list[TokenProbs]
    """... under the tailored policy."""
    adapters: dict[str, list[TokenProbs]] = field(default_factory=dict)
    """... under each adapter's own distribution, by adapter name."""


class Inspection:
    """Records a DecodeRun's distributions, step by step, as the top tokens of each (made by DecodeRun)."""

    def __init__(self, run):
        """run: the DecodeRun that records into this (its terms, streams and tokenizer are read)."""
        self.run = run
        self.names = [name for _, name, _ in run.terms] if run.use_adapter else []
        self.records: list[dict[str, torch.Tensor]] = []
        self._texts: dict[int, str] = {}

    def record(self, t: int, logits: dict[str, torch.Tensor], base_logprobs: torch.Tensor, policy_logprobs: torch.Tensor,
               steered_logprobs: torch.Tensor | None, choice_logprobs: torch.Tensor, filtered: torch.Tensor | None,
               next_tokens: torch.Tensor, active: torch.Tensor, kl: torch.Tensor) -> None:
        """One step's distributions (S streams, V tokens), from DecodeRun.advance.

        base_logprobs (S, V); policy_logprobs (S, V) each stream's own policy; steered_logprobs (A, V) the tailored
        policy of the A streams with adapter rows (DecodeRun.steered), or None (no adapter at work); choice_logprobs
        (S, V) with EOS banned before min_new_tokens; filtered (S, V) the sampling logits, None when greedy;
        next_tokens (S,); kl (S,) KL(policy ‖ base) of each stream. The adapters' rows, like steered_logprobs, cover
        the steered streams only: the others' adapter and tailored lists are not made (InspectedSteps.partial)."""
        S = base_logprobs.shape[0]
        steered = self.run.steered_idx.to(base_logprobs.device)
        every = steered_logprobs is None or len(steered) == S
        tailored = steered_logprobs if steered_logprobs is not None and every else policy_logprobs
        # Every distribution as log-probabilities (the adapters' and the sampled one's only normalised where read:
        # at the candidates), so that a step costs a top-k and a gather per distribution, not a softmax.
        adapters = [logits[kind].float() for kind, _, _ in self.run.terms] if self.names else []  # each (A, V)
        if filtered is not None:
            sampled = filtered.float()
        else:
            sampled = torch.full_like(choice_logprobs, float("-inf")).scatter_(
                -1, choice_logprobs.argmax(-1, keepdim=True), 0.0)
        chosen = next_tokens.to(base_logprobs.device).unsqueeze(-1)

        def every_stream(ids: torch.Tensor) -> torch.Tensor:  # (A, k) -> (S, k): an unsteered stream lists its chosen token
            if every:
                return ids
            return chosen.expand(-1, ids.shape[1]).clone().index_copy_(0, steered, ids)

        # Candidates: the chosen token, then the top k of base, tailored and each adapter, in that order.
        tops = [torch.topk(base_logprobs, TOP_K, dim=-1).indices,
                every_stream(torch.topk(tailored if every else tailored[steered], TOP_K, dim=-1).indices)]
        tops += [every_stream(torch.topk(a, TOP_K, dim=-1).indices) for a in adapters]
        ids = torch.cat([chosen] + tops, dim=-1)  # (S, 1 + k·(2 + adapters))
        # The sampled distribution is mostly -inf (top-p), and exp(-inf) takes a CPU's slow path (20 x a normal
        # value's: 360 vs 45 us a logsumexp of 2 x 49,152): what lies more than 80 below a row's top is floored there
        # first, which changes the sum by under 1e-30 of it.
        floor = sampled.amax(-1, keepdim=True) - 80
        probs = [base_logprobs.gather(-1, ids).exp(), tailored.gather(-1, ids).exp(),
                 (sampled.gather(-1, ids) - torch.logsumexp(sampled.clamp(min=floor), -1, keepdim=True)).exp()]
        for a in adapters:
            p = (a.gather(-1, ids[steered]) - torch.logsumexp(a, -1, keepdim=True)).exp()
            probs.append(p if every else torch.full(ids.shape, float("nan"), device=ids.device).index_copy_(0, steered, p))
        self.records.append({
            "ids": ids.cpu(),
            "probs": torch.stack(probs).cpu(),
            "kl": (kl_divergence(tailored, base_logprobs) if every and steered_logprobs is not None else kl).cpu(),
            "active": active.clone(),
        })

    def views(self, stream: int, length: int) -> InspectedSteps:
        """One stream's first `length` steps, as StepViews made when read."""
        partial = bool(self.names) and stream not in self.run.steered
        return InspectedSteps(self.records[:length], stream, tuple(self.names), self.run.policy.tokenizer, self._texts,
                              partial)


class InspectedSteps(Sequence[StepView]):
    """One continuation's recorded steps (Completion.steps), each StepView made when it is read: a result carries
    every step, the page opens a few. Holds the records' small tensors (about 1.5 kB a step for both columns),
    the tokenizer and the token texts decoded so far."""

    def __init__(self, records: list[dict[str, torch.Tensor]], stream: int, names: tuple[str, ...], tokenizer,
                 texts: dict[int, str], partial: bool = False):
        self.records, self.stream, self.names, self.tokenizer, self.texts = records, stream, names, tokenizer, texts
        self.partial = partial
        """A base-column stream decoded without adapter rows: its views list the base's tokens only (no tailored
        list, no adapters, NaN for the tailored probability and the KL) until replayed (DecodeRun.base_replay)."""

    def __len__(self) -> int:
        return len(self.records)

    def __eq__(self, other) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None

    def __getitem__(self, t):
        if isinstance(t, slice):
            return [self[i] for i in range(*t.indices(len(self)))]
        t = range(len(self))[t]  # negative steps count from the end; out of range raises IndexError
        return self._view(self.records[t], t)

    def _view(self, record: dict, t: int) -> StepView:
        s = self.stream
        ids, probs = record["ids"][s].tolist(), record["probs"][:, s].tolist()
        unseen = [i for i in dict.fromkeys(ids) if i not in self.texts]
        self.texts.update(zip(unseen, self.tokenizer.batch_decode([[i] for i in unseen])))

        names = () if self.partial else self.names

        def token(c: int) -> TokenProbs:
            return TokenProbs(ids[c], self.texts[ids[c]], base=probs[0][c],
                              tailored=float("nan") if self.partial else probs[1][c], sampled=probs[2][c],
                              adapters={name: probs[3 + i][c] for i, name in enumerate(names)})

        def top(block: int) -> list[TokenProbs]:
            return [token(1 + block * TOP_K + j) for j in range(TOP_K)]

        return StepView(step=t, chosen=token(0), kl=float("nan") if self.partial else float(record["kl"][s]),
                        base=top(0), tailored=[] if self.partial else top(1),
                        adapters={name: top(2 + i) for i, name in enumerate(names)})


# --- branching -------------------------------------------------------------------------------------------------
