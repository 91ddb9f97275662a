"""What the token inspector records at each step of a run with inspect=True (ipa.decoding.inspector says what
each distribution means): the most likely tokens under base, each adapter and the tailored policy, with their
probabilities, taken from the very tensors the run sampled from. DecodeRun makes one; its views come with the
run's final result.
"""

from __future__ import annotations

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

    def record(self, t: int, logits: dict[str, torch.Tensor], base_logprobs: torch.Tensor,
               steered_logprobs: torch.Tensor | None, choice_logprobs: torch.Tensor, filtered: torch.Tensor | None,
               next_tokens: torch.Tensor, active: torch.Tensor) -> None:
        """One step's distributions (S streams, V tokens), from DecodeRun.advance.

        base_logprobs (S, V); steered_logprobs (S, V) or None (no adapter at work); choice_logprobs (S, V) with
        EOS banned before min_new_tokens; filtered (S, V) the sampling logits, None when greedy; next_tokens (S,)."""
        run = self.run
        tailored = steered_logprobs if steered_logprobs is not None else base_logprobs
        adapters = [torch.log_softmax(logits[kind].float(), dim=-1) for kind, _, _ in run.terms] if self.names else []
        if filtered is not None:
            sampled = torch.softmax(filtered.double(), dim=-1).float()
        else:
            sampled = torch.zeros_like(choice_logprobs).scatter_(-1, choice_logprobs.argmax(-1, keepdim=True), 1.0)
        distributions = [base_logprobs.exp(), tailored.exp(), sampled] + [a.exp() for a in adapters]  # each (S, V)
        chosen = next_tokens.to(base_logprobs.device).unsqueeze(-1)
        # Candidates: the chosen token, then the top k of base, tailored and each adapter, in that order.
        tops = [torch.topk(d, TOP_K, dim=-1).indices for i, d in enumerate(distributions) if i != 2]
        ids = torch.cat([chosen] + tops, dim=-1)  # (S, 1 + k·(2 + adapters))
        self.records.append({
            "ids": ids.cpu(),
            "probs": torch.stack([d.gather(-1, ids) for d in distributions]).cpu(),  # (3 + adapters, S, C)
            "kl": kl_divergence(tailored, base_logprobs).cpu(),
            "active": active.clone(),
        })

    def views(self, stream: int, length: int) -> list[StepView]:
        """The StepViews of one stream's first `length` steps."""
        return [self._view(record, t, stream) for t, record in enumerate(self.records[:length])]

    def _view(self, record: dict, t: int, s: int) -> StepView:
        ids, probs = record["ids"][s].tolist(), record["probs"][:, s].tolist()

        def token(c: int) -> TokenProbs:
            return TokenProbs(ids[c], self._text(ids[c]), base=probs[0][c], tailored=probs[1][c], sampled=probs[2][c],
                              adapters={name: probs[3 + i][c] for i, name in enumerate(self.names)})

        def top(block: int) -> list[TokenProbs]:
            return [token(1 + block * TOP_K + j) for j in range(TOP_K)]

        return StepView(step=t, chosen=token(0), kl=float(record["kl"][s]), base=top(0), tailored=top(1),
                        adapters={name: top(2 + i) for i, name in enumerate(self.names)})

    def _text(self, token_id: int) -> str:
        if token_id not in self._texts:
            self._texts[token_id] = self.run.policy.tokenizer.decode([token_id])
        return self._texts[token_id]


# --- branching -------------------------------------------------------------------------------------------------
