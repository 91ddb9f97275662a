"""Quark (Lu et al. 2022), the training algorithm of the IPA paper.

One step: sample continuations from the tailored policy conditioned on the best reward token, score
them and add them to a data pool; sort the pool by reward into K quantiles, each marked by a reward
token prepended to the adapter's input; then train the adapter on a batch drawn from the pool:

    loss = − mean_tokens log p_tailored(token | reward token of the sample's quantile)
           + kl_coef · mean_tokens KL(tailored || base)  −  entropy_coef · mean_tokens entropy(tailored)

At inference the best quantile's token (index 0) is used.
"""

from __future__ import annotations

import random

import torch

from adapters.tailored_decoding import DecodeConfig, TailoredPolicy, sample
from adapters.training import TrainConfig, apply_gradients, now, step_rng, step_seed, tailored_token_stats


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


def quark_step(policy: TailoredPolicy, config: TrainConfig, prompts: list[str], score, optimizer, step: int,
               pool: DataPool, rank: int = 0, sync_gradients=None) -> dict:
    """Explore with the best reward token, add to the pool, learn from a pool batch; returns statistics."""
    host, name = policy.adapter, policy.adapter_name
    tokenizer = policy.tokenizer
    pad_id = tokenizer.pad_token_id
    t0 = now()
    decode = DecodeConfig(max_new_tokens=config.max_new_tokens, temperature=config.temperature, top_p=config.top_p,
                          alpha=config.alpha, seed=step_seed(config.seed, step, rank))
    batch = sample(policy, prompts, decode, n=1, columns=("tailored",))  # decoding prepends the best token
    lengths = batch.completion_mask.sum(-1).tolist()
    completions = [ids[:n].tolist() for ids, n in zip(batch.completion_ids, lengths)]
    texts = [tokenizer.decode(c, skip_special_tokens=True) for c in completions]
    t1 = now()
    scores = score(texts)
    rewards = torch.tensor([s["reward"] for s in scores], dtype=torch.float32)
    pool.add(batch.prompt_ids, completions, rewards.tolist())
    quantiles = pool.quantiles()
    t2 = now()

    chosen = pool.draw(config.batch_size, step_rng(config.seed, step, rank))
    width = max(1, max(len(pool.completions[i]) for i in chosen))
    completion_ids = torch.full((len(chosen), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(chosen), width))
    for row, i in enumerate(chosen):
        completion_ids[row, :len(pool.completions[i])] = torch.tensor(pool.completions[i], dtype=torch.long)
        mask[row, :len(pool.completions[i])] = 1
    total_tokens = mask.sum().clamp(min=1)
    optimizer.zero_grad(set_to_none=True)
    nll_sum = kl_sum = entropy_sum = 0.0
    for rows in torch.arange(len(chosen)).split(config.micro_batch_size):
        index = [chosen[r] for r in rows]
        stats = tailored_token_stats(policy, [pool.prompts[i] for i in index], completion_ids[rows], config.alpha,
                                     reward_tokens=quantiles[index])
        m = mask[rows].to(stats["logprob"].device)
        nll = -(stats["logprob"] * m).sum() / total_tokens
        kl = (stats["kl"] * m).sum() / total_tokens
        entropy = (stats["entropy"] * m).sum() / total_tokens
        (nll + config.kl_coef * kl - config.entropy_coef * entropy).backward()
        nll_sum += nll.item()
        kl_sum += kl.item()
        entropy_sum += entropy.item()
    if sync_gradients is not None:
        sync_gradients()
    grad_norm = apply_gradients(optimizer, host.trainable_parameters(name))
    t3 = now()
    return {
        "rewards": rewards, "scores": scores, "texts": texts, "prompt_ids": batch.prompt_ids,
        "loss": nll_sum + config.kl_coef * kl_sum - config.entropy_coef * entropy_sum, "nll": nll_sum,
        "kl": kl_sum, "entropy": entropy_sum, "grad_norm": grad_norm, "tokens": float(total_tokens),
        "pool_size": len(pool), "sample_s": t1 - t0, "score_s": t2 - t1, "update_s": t3 - t2,
    }
