"""The tailored policy's arithmetic, as pure tensor functions: the method in one screen.

    tailored(x_t | x_<t)  ∝  p_base(x_t | x_<t) · Π_i exp(alpha_i · term_i)
    residual (default): term_i = adapter_i logits − the adapters' initial model's logits   (untrained: the base)
    paper:              term_i = adapter_i logits                                            (Lu et al. 2023)

then the next token: end-of-sequence banned before min_new_tokens, greedy argmax at temperature 0, else
temperature, top-k and top-p, and an inverse-CDF draw with a uniform shared by each base/tailored pair (so the two
columns differ only where the adapter moved the distribution). The engine (ipa.decoding.engine), the reference
decoder (ipa.decoding.reference) and training's recompute (ipa.training.config) all go through these functions.

    >>> base = torch.tensor([[0.0, 1.0]]); adapter = torch.tensor([[2.0, 0.0]])
    >>> tailored_logprobs(base, [adapter], base, [0.0]).allclose(torch.log_softmax(base, -1))  # alpha 0: the base
    True
"""

from __future__ import annotations

from typing import Protocol

import torch

from ipa.policy_adapter import COMBINATIONS


def compose_logits(
    base_logits: torch.Tensor,
    adapter_logits: list[torch.Tensor],
    init_logits: torch.Tensor | None,
    alphas: list[float],
    combination: str = "residual",
) -> torch.Tensor:
    """Unnormalised log-probabilities of a base steered by adapters.  (B, V), k × (B, V) -> (B, V)

    residual: log_softmax(base) + Σ_i alpha_i · (adapter_i − init)
    paper:    log_softmax(base) + Σ_i alpha_i · adapter_i

    A product of experts, base × adapter_1^alpha_1 × adapter_2^alpha_2 ... The adapters sit on one initial model,
    so one init serves every term. Under the residual form each adapter contributes only what it learned, and an
    untrained one nothing. Under the paper's form each adapter's logits already hold its initial model (the base,
    by default), so k silent adapters sample from about p_base^(1 + Σ alpha_i): composing sharpens the text.

    >>> base = torch.tensor([[0.0, 1.0]]); a = torch.tensor([[2.0, 0.0]]); b = torch.tensor([[0.0, 3.0]])
    >>> out = compose_logits(base, [a, b], base, [1.0, 0.5])
    >>> out.allclose(torch.log_softmax(base, -1) + (a - base) + 0.5 * (b - base))
    True
    """
    if combination not in COMBINATIONS:
        raise ValueError(f"Unknown combination {combination!r}: use one of {', '.join(COMBINATIONS)}.")
    total = torch.log_softmax(base_logits.float(), dim=-1)
    if combination == "residual" and init_logits is None and any(alpha != 0 for alpha in alphas):
        raise ValueError("The residual combination needs the adapters' initial logits.")
    for adapter, alpha in zip(adapter_logits, alphas, strict=True):
        if alpha == 0:
            continue
        term = adapter.float() if combination == "paper" else adapter.float() - init_logits.float()
        total = total + alpha * term
    return total


def tailored_logprobs(base_logits: torch.Tensor, adapter_logits: list[torch.Tensor], init_logits: torch.Tensor | None,
                      alphas: list[float], combination: str = "residual") -> torch.Tensor:
    """The tailored policy's normalised log-probabilities (compose_logits, then log-softmax).  (..., V) -> (..., V)"""
    return torch.log_softmax(compose_logits(base_logits, adapter_logits, init_logits, alphas, combination), dim=-1)


NUCLEUS_THRESHOLDS = (1e-3, 1e-4, 1e-5, 0.0)
"""Top-p looks for the nucleus among a row's tokens of probability at least 1e-3 (at most 1,000 of them), else 1e-4,
else 1e-5, before it sorts the whole vocabulary: once the tokens above a threshold hold top_p of the probability, no
token below it is in the nucleus (the nucleus takes tokens most likely first until it holds top_p), so only they are
sorted. The tokens above the lowest threshold are gathered once and the others are looked for among them. For 2 rows
of 49,152 tokens from the embedded model this costs about 0.2 ms where a top-256/top-4,096 search cost 1 ms (a full
sort: 5 ms). The nucleus is the same as a full sort's up to float rounding at its last token."""


def _nucleus(logits: torch.Tensor, top_p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, columns) of the tokens in each row's nucleus: the most likely tokens, most likely first, while the
    ones before them hold less than top_p (the top token always stays).  (B, V) -> (N,), (N,)"""
    probs = torch.softmax(logits, dim=-1)
    r, c = (probs >= NUCLEUS_THRESHOLDS[-2]).nonzero(as_tuple=True)  # every candidate above a threshold, row by row
    p = probs[r, c]
    threshold = torch.zeros(probs.shape[0], dtype=probs.dtype, device=probs.device)  # 0: every token
    pending = torch.ones(probs.shape[0], dtype=torch.bool, device=probs.device)
    for candidate in NUCLEUS_THRESHOLDS[:-1]:  # each row's highest threshold whose tokens hold top_p
        mass = torch.zeros_like(threshold).index_add_(0, r, p * (p >= candidate))
        reached = pending & (mass >= top_p)
        threshold[reached] = candidate
        pending &= ~reached
        if not bool(pending.any()):
            break
    if bool(pending.any()):  # a row whose likely tokens hold less than top_p: all of its tokens are candidates
        r, c = (probs >= threshold[:, None]).nonzero(as_tuple=True)
        p = probs[r, c]
    else:
        above = p >= threshold[r]
        r, c, p = r[above], c[above], p[above]
    p = p.double()
    order = torch.argsort(r.double() * 2 - p, stable=True)  # row by row, most likely first
    r, c, p = r[order], c[order], p[order]
    cumulative = torch.cumsum(p, dim=0)  # across rows: a row's own sum is this minus what came before the row
    counts = torch.bincount(r, minlength=probs.shape[0])
    before = torch.cat([cumulative.new_zeros(1), cumulative])[torch.cumsum(counts, dim=0) - counts]  # (B,)
    keep = (cumulative - before[r] - p) < top_p
    return r[keep], c[keep]


def filter_logits(logprobs: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """Temperature, then top-k, then top-p (nucleus); removed tokens get -inf.  (B, V) -> (B, V)"""
    return _filtered(logprobs, temperature, top_k, top_p)[0]


def _filtered(logprobs: torch.Tensor, temperature: float, top_k: int, top_p: float
              ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
    """filter_logits, and the (rows, columns) of the tokens top-p kept (None without top-p)."""
    logits = logprobs / temperature if temperature != 1 else logprobs
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p >= 1.0:
        return logits, None
    rows, columns = _nucleus(logits, top_p)
    kept = torch.full_like(logits, float("-inf"))
    kept[rows, columns] = logits[rows, columns]
    return kept, (rows, columns)


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


def _sample_kept(logits: torch.Tensor, rows: torch.Tensor, columns: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """sample_coupled's draw when only the tokens (rows, columns) are possible (top-p's nucleus, every row has one):
    the same inverse CDF in vocabulary order, over those tokens alone, not the whole vocabulary.  -> (B,)"""
    B, V = logits.shape
    order = torch.argsort(rows * V + columns)  # row by row, in vocabulary order
    rows, columns = rows[order], columns[order]
    values = logits[rows, columns].double()
    top = torch.full((B,), float("-inf"), dtype=values.dtype, device=values.device).scatter_reduce(0, rows, values, "amax")
    weights = torch.exp(values - top[rows])
    cumulative = torch.cumsum(weights, dim=0)  # across rows, as in _nucleus
    counts = torch.bincount(rows, minlength=B)
    ends = torch.cumsum(counts, dim=0)
    before = torch.cat([cumulative.new_zeros(1), cumulative])[ends - counts]  # (B,)
    totals = cumulative[ends - 1] - before
    target = before + uniforms.double().to(values.device) * totals  # each row's draw, on the running sum
    picked = torch.searchsorted(cumulative, target).clamp(min=ends - counts, max=ends - 1)  # stays in its row
    return columns[picked]


class Sampling(Protocol):
    """What next_tokens reads of a DecodeConfig."""

    temperature: float
    top_k: int
    top_p: float
    min_new_tokens: int


def sampling_logits(logprobs: torch.Tensor, config: Sampling, step: int | torch.Tensor,
                    eos_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """What a row's next token is drawn from at decoding step `step` (an int, or one per row (B,)): the
    log-probabilities chosen from (B, V: EOS banned before config.min_new_tokens) and the sampling logits after
    temperature, top-k and top-p (B, V; None when greedy, temperature 0)."""
    choice, filtered, _ = _sampling(logprobs, config, step, eos_ids)
    return choice, filtered


def _sampling(logprobs: torch.Tensor, config: Sampling, step: int | torch.Tensor, eos_ids: list[int]):
    """sampling_logits, and the (rows, columns) top-p kept (None without top-p, or when greedy)."""
    choice = logprobs
    banned = torch.as_tensor(step, device=logprobs.device) < config.min_new_tokens  # () or (B,)
    if eos_ids and bool(banned.any()):
        eos = torch.zeros(logprobs.shape[-1], dtype=torch.bool, device=logprobs.device)
        eos[eos_ids] = True
        choice = logprobs.masked_fill(eos & banned.reshape(-1, 1), float("-inf"))
    if config.temperature == 0:
        return choice, None, None
    filtered, kept = _filtered(choice, config.temperature, config.top_k, config.top_p)
    return choice, filtered, kept


def next_tokens(logprobs: torch.Tensor, config: Sampling, step: int | torch.Tensor, eos_ids: list[int],
                uniforms: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Each row's next token from its policy's log-probabilities at decoding step `step` (0: the first new token).
    (B, V), uniforms (B,) -> tokens (B,), the log-probabilities chosen from (B, V: EOS banned before
    config.min_new_tokens), the sampling logits (B, V; None when greedy, temperature 0)."""
    choice, filtered, kept = _sampling(logprobs, config, step, eos_ids)
    if filtered is None:
        return choice.argmax(dim=-1), choice, None
    if kept is None:
        return sample_coupled(filtered, uniforms.to(filtered.device)), choice, filtered
    return _sample_kept(filtered, *kept, uniforms), choice, filtered


def verify_drafts(draft: torch.Tensor, target: torch.Tensor, drafted: torch.Tensor, accept_u: torch.Tensor,
                  residual_u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The speculative-sampling rule (Leviathan et al. 2023; Chen et al. 2023): a token drawn from the draft
    distribution q is kept with probability min(1, p(x) / q(x)), else replaced by a draw from the residual
    max(0, p − q) renormalised; the kept or redrawn token is then distributed exactly as p, whatever q was.
    draft, target: the sampling logits of q and p (B, V; filter_logits' output, -inf where removed); drafted (B,)
    tokens drawn from q; accept_u, residual_u (B,) uniforms. -> accepted (B,) bool, each row's token (B,): the
    drafted one where accepted, the residual's draw elsewhere.

    >>> p = torch.log(torch.tensor([[0.5, 0.5, 0.0]])); q = torch.log(torch.tensor([[0.0, 0.25, 0.75]]))
    >>> verify_drafts(q, p, torch.tensor([2]), torch.tensor([0.3]), torch.tensor([0.1]))  # p(2) = 0: redrawn from p−q
    (tensor([False]), tensor([0]))
    """
    p = torch.softmax(target.double(), dim=-1)
    q = torch.softmax(draft.double(), dim=-1)
    p_x = p.gather(-1, drafted[:, None]).squeeze(-1)
    q_x = q.gather(-1, drafted[:, None]).squeeze(-1)
    accepted = accept_u.double() * q_x < p_x  # u < p/q without dividing; q_x > 0 for a token drawn from q
    residual = (p - q).clamp(min=0)
    empty = residual.sum(-1) <= 0  # p == q on every token: nothing is ever rejected; draw from p to stay finite
    residual[empty] = p[empty]
    redrawn = sample_coupled(torch.log(residual), residual_u)
    return accepted, torch.where(accepted, drafted, redrawn)


def topk_union(rows: list[torch.Tensor]) -> list[torch.Tensor]:
    """Top-k log-probabilities of several models (each (B, V), -inf outside what its server reported) on the
    union of their tokens: a token one list lacks gets that list's lowest reported log-probability there (an
    upper bound on its true value, the least a token outside the list can be credited without excluding it);
    tokens in no list stay -inf. This is how a base's and its served adapters' top-k lists are combined.

    >>> a = torch.tensor([[-0.1, -2.5, float("-inf")]]); b = torch.tensor([[-1.0, float("-inf"), -0.5]])
    >>> [r.tolist() for r in topk_union([a, b])]
    [[[-0.10000000149011612, -2.5, -2.5]], [[-1.0, -1.0, -0.5]]]
    """
    known = [torch.isfinite(row) for row in rows]
    union = torch.stack(known).any(0)
    out = []
    for row, finite in zip(rows, known):
        floor = torch.where(finite, row, torch.full_like(row, float("inf"))).amin(-1, keepdim=True)
        out.append(torch.where(finite, row, torch.where(union, floor.expand_as(row), row)))
    return out


def kl_divergence(p_logprobs: torch.Tensor, q_logprobs: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per row from normalised log-probabilities.  (B, V), (B, V) -> (B,)"""
    p = p_logprobs.exp()
    terms = p * (p_logprobs - q_logprobs)
    return torch.nan_to_num(terms, nan=0.0).sum(dim=-1)
