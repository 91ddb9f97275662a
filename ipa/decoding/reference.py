"""The paper's decoding loop, plainly: one stream, every step a full forward pass of each model over the whole text
so far (no KV cache, no batching, no padding). The oracle the engine (ipa.decoding.engine) is tested against: the
engine must choose these tokens with these log-probabilities, whatever else it decodes at the same time.

    >>> tokens, logprobs = reference_decode(policy, prompt_ids, DecodeConfig(max_new_tokens=8), uniforms)  # doctest: +SKIP
"""

from __future__ import annotations

import torch

from ipa.models import logits_at
from ipa.decoding.policy_math import next_tokens, tailored_logprobs
from ipa.decoding.run import DecodeConfig, TailoredPolicy, eos_token_ids


def _last_logits(model, ids: list[int], prefix: torch.Tensor | None = None) -> torch.Tensor:
    """Next-token logits after `ids` (a reward token's embedding first, when given).  -> (V,)"""
    tokens = torch.tensor([ids], device=model.device)
    if prefix is None:
        hidden = model.get_decoder()(input_ids=tokens).last_hidden_state
    else:
        embeds = model.get_input_embeddings()(tokens)
        embeds = torch.cat([prefix.to(embeds.dtype).view(1, 1, -1), embeds], dim=1)
        hidden = model.get_decoder()(inputs_embeds=embeds).last_hidden_state
    return logits_at(model, hidden, slice(-1, None))[0, 0].float()


@torch.inference_mode()
def reference_decode(policy: TailoredPolicy, prompt_ids: list[int], config: DecodeConfig,
                     uniforms: torch.Tensor | None = None, steered: bool = True) -> tuple[list[int], list[float]]:
    """(tokens, their log-probabilities under the decoded policy) of one continuation of one prompt: the tailored
    policy (steered) or the base alone. uniforms (T,): the random number of each step (unused when greedy)."""
    base, adapter = policy.base, policy.adapter
    terms = [(policy.adapter_name, config.alpha), *policy.more_adapters] if steered and adapter is not None else []
    terms = [(name, alpha) for name, alpha in terms if alpha != 0]
    eos, ids, tokens, logprobs = eos_token_ids(base), list(prompt_ids), [], []
    for t in range(config.max_new_tokens):
        with base.base_only() as model:
            base_logits = _last_logits(model, ids)
        adapter_logits, init = [], base_logits
        for name, _ in terms:
            with adapter.only(name) as model:
                adapter_logits.append(_last_logits(model, ids, adapter.reward_token_embedding(name)))
        if terms and policy.combination == "residual" and adapter is not base:
            with adapter.base_only() as model:
                init = _last_logits(model, ids)
        logprob = tailored_logprobs(base_logits, adapter_logits, init, [a for _, a in terms], policy.combination)
        u = None if uniforms is None else uniforms[t:t + 1]
        token = int(next_tokens(logprob[None], config, t, eos, u)[0][0])
        tokens.append(token)
        logprobs.append(float(logprob[token]))
        ids.append(token)
        if config.stop_at_eos and token in eos:
            break
    return tokens, logprobs
