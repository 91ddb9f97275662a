"""Group-baseline policy gradient on the tailored policy (the default algorithm).

One step: sample G continuations per prompt from the tailored policy, score them, take each sample's
advantage against its group (reward − group mean, over the group's std), and minimise

    loss = − mean_tokens(advantage · log p_tailored(token))  +  kl_coef · mean_tokens KL(tailored || base)

Only the adapter moves. DESIGN.md: on toxicity this cut average max toxicity by 83 % where Quark did not
move it.
"""

from __future__ import annotations

import torch

from adapters.tailored_decoding import DecodeConfig, TailoredPolicy, sample
from adapters.training import TrainConfig, apply_gradients, group_advantages, now, step_seed, tailored_token_stats


def pg_step(policy: TailoredPolicy, config: TrainConfig, prompts: list[str], score, optimizer, step: int, rank: int = 0,
            sync_gradients=None) -> dict:
    """One policy-gradient step over len(prompts) prompts × config.group_size samples; returns its statistics.

    score(completions: list[str]) -> list[dict] with a "reward" key per completion.
    """
    host, name = policy.adapter, policy.adapter_name
    tokenizer = policy.tokenizer
    t0 = now()
    decode = DecodeConfig(max_new_tokens=config.max_new_tokens, temperature=config.temperature, top_p=config.top_p,
                          alpha=config.alpha, seed=step_seed(config.seed, step, rank))
    batch = sample(policy, prompts, decode, n=config.group_size, columns=("tailored",))
    texts = [tokenizer.decode(ids[:int(m.sum())], skip_special_tokens=True)
             for ids, m in zip(batch.completion_ids, batch.completion_mask)]
    t1 = now()
    scores = score(texts)
    rewards = torch.tensor([s["reward"] for s in scores], dtype=torch.float32)
    advantages = group_advantages(rewards, config.group_size)
    t2 = now()

    mask = batch.completion_mask.float()
    total_tokens = mask.sum().clamp(min=1)
    optimizer.zero_grad(set_to_none=True)
    kl_sum = entropy_sum = pg_sum = 0.0
    for rows in torch.arange(len(texts)).split(config.micro_batch_size):
        stats = tailored_token_stats(policy, [batch.prompt_ids[r] for r in rows], batch.completion_ids[rows], config.alpha)
        m = mask[rows].to(stats["logprob"].device)
        adv = advantages[rows].to(m.device).unsqueeze(-1)
        pg_loss = -(adv * stats["logprob"] * m).sum() / total_tokens
        kl = (stats["kl"] * m).sum() / total_tokens
        (pg_loss + config.kl_coef * kl).backward()
        pg_sum += pg_loss.item()
        kl_sum += kl.item()
        entropy_sum += ((stats["entropy"] * m).sum() / total_tokens).item()
    if sync_gradients is not None:
        sync_gradients()
    grad_norm = apply_gradients(optimizer, host.trainable_parameters(name))
    t3 = now()
    return {
        "rewards": rewards, "scores": scores, "texts": texts, "prompt_ids": batch.prompt_ids,
        "loss": pg_sum + config.kl_coef * kl_sum, "pg_loss": pg_sum, "kl": kl_sum, "entropy": entropy_sum,
        "grad_norm": grad_norm, "tokens": float(total_tokens), "sample_s": t1 - t0, "score_s": t2 - t1, "update_s": t3 - t2,
    }
