"""Quark (Lu et al. 2022), the training algorithm of the IPA paper.

What it does differently from the policy gradient (ipa.training.loop.rl_step runs both): samples are drawn
conditioned on the best reward token, scored and added to a data pool; the pool is sorted by reward into K
quantiles, each marked by a reward token prepended to the adapter's input; the adapter then trains on a
batch drawn from the pool, with the loss per token

    − log p_tailored(token | reward token of the sample's quantile)  −  entropy_coef · entropy(tailored)
    + kl_coef · KL(tailored || base)

At inference the best quantile's token (index 0) is used.
"""

from __future__ import annotations

import random

import torch



class DataPool:
    """Samples with rewards; quantile 0 holds the highest rewards. Keeps the most recent max_size."""

    def __init__(self, n_quantiles: int, max_size: int):
        self.n_quantiles = n_quantiles
        self.max_size = max_size
        self.prompts: list[list[int]] = []
        self.completions: list[list[int]] = []
        self.rewards: list[float] = []

    def __len__(self) -> int:
        return len(self.rewards)

    def add(self, prompts: list[list[int]], completions: list[list[int]], rewards: list[float]) -> None:
        self.prompts += prompts
        self.completions += completions
        self.rewards += [float(r) for r in rewards]
        overflow = len(self) - self.max_size
        if overflow > 0:
            del self.prompts[:overflow], self.completions[:overflow], self.rewards[:overflow]

    def quantiles(self) -> torch.Tensor:
        """Quantile index per sample (0 = best): rank by reward, highest first, in K equal slices.  -> (N,)

        >>> pool = DataPool(2, 10); pool.add([[1]] * 4, [[2]] * 4, [0.1, 0.9, 0.5, 0.3]); pool.quantiles()
        tensor([1, 0, 0, 1])
        """
        order = sorted(range(len(self)), key=lambda i: -self.rewards[i])  # stable: ties keep pool order
        quantile = torch.empty(len(self), dtype=torch.long)
        for rank, i in enumerate(order):
            quantile[i] = rank * self.n_quantiles // len(self)
        return quantile

    def draw(self, k: int, rng: random.Random) -> list[int]:
        return [rng.randrange(len(self)) for _ in range(k)]

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """Flat tensors for a safetensors checkpoint."""
        return {
            "pool_prompt_lengths": torch.tensor([len(p) for p in self.prompts], dtype=torch.long),
            "pool_prompt_ids": torch.tensor([t for p in self.prompts for t in p], dtype=torch.long),
            "pool_completion_lengths": torch.tensor([len(c) for c in self.completions], dtype=torch.long),
            "pool_completion_ids": torch.tensor([t for c in self.completions for t in c], dtype=torch.long),
            "pool_rewards": torch.tensor(self.rewards, dtype=torch.float64),
        }

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        def split(ids, lengths):
            return [chunk.tolist() for chunk in torch.split(ids, lengths.tolist())] if len(lengths) else []
        self.prompts = split(tensors["pool_prompt_ids"], tensors["pool_prompt_lengths"])
        self.completions = split(tensors["pool_completion_ids"], tensors["pool_completion_lengths"])
        self.rewards = tensors["pool_rewards"].tolist()


def pool_batch(pool: DataPool, k: int, rng: random.Random, pad_id: int) -> tuple[list[list[int]], torch.Tensor, torch.Tensor, torch.Tensor]:
    """k samples drawn from the pool: prompt ids, completion ids (k, T) padded with pad_id, their mask (k, T)
    and each sample's quantile (k,), which becomes its reward token."""
    quantiles = pool.quantiles()
    chosen = pool.draw(k, rng)
    width = max(1, max(len(pool.completions[i]) for i in chosen))
    completion_ids = torch.full((k, width), pad_id, dtype=torch.long)
    mask = torch.zeros((k, width))
    for row, i in enumerate(chosen):
        completion_ids[row, :len(pool.completions[i])] = torch.tensor(pool.completions[i], dtype=torch.long)
        mask[row, :len(pool.completions[i])] = 1
    return [pool.prompts[i] for i in chosen], completion_ids, mask, quantiles[chosen]


def quark_token_loss(stats: dict[str, torch.Tensor], entropy_coef: float) -> torch.Tensor:
    """Quark's term per token: − log p_tailored(token | reward token) − entropy_coef · entropy.  -> (S, T)"""
    return -stats["logprob"] - entropy_coef * stats["entropy"]
