"""A light adapter's rows inside the base's forward pass: one pass a step for two models.

A light model (ipa.models.light_model_dir) is its base's first layers with the base's final norm and output layer,
the same weights. So a row of the light model is a row of the base that skips the layers the light model lacks:

    layer i of the base      runs the base's rows, and the light rows too when the light model has layer i (with
                             each light row's LoRA delta, AdapterHost.per_row; the base's rows get none)
    final norm, output layer  every row

Rows are ordered base rows first (`n_full` of them), light rows after, so the rows a layer runs are always the first
n_full or all of them; each layer's KV cache holds just those rows (RowBatch keeps them so). A step at batch 1 then
costs what the base's own step costs, where two forward passes one after the other cost the base's plus the light
model's (about 46 + 12 ms on the 2-core CPU: BENCHMARKS.md, "A light adapter").
"""

from __future__ import annotations

import torch
from transformers.masking_utils import create_causal_mask

from ipa.policy_adapter import AdapterHost


class _LayerCache:
    """The engine's KV cache as the light model's layer j sees it: its keys and values go to the base's layer i."""

    def __init__(self, cache, layer: int):
        self.cache, self.layer = cache, layer

    def update(self, keys, values, layer_idx, *args, **kwargs):
        return self.cache.update(keys, values, self.layer, *args, **kwargs)


def fused_forward(base: AdapterHost, light: AdapterHost, layers: list[int], n_full: int, names: list[str | None],
                  cache, attention_mask: torch.Tensor, position_ids: torch.Tensor, input_ids: torch.Tensor | None = None,
                  inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
    """The last hidden states (R, L, H), after the final norm, of R rows: the first n_full through every layer of the
    base, the others through the base's layers `layers` only (the light model's, its layer j being the base's
    layers[j]), each with the adapter names[r] (None: none; only light rows carry one)."""
    decoder, light_decoder = base.base_model.get_decoder(), light.base_model.get_decoder()
    hidden = decoder.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
    mask = create_causal_mask(config=base.base_model.config, inputs_embeds=hidden, attention_mask=attention_mask,
                              past_key_values=cache, position_ids=position_ids)
    cos, sin = decoder.rotary_emb(hidden, position_ids=position_ids)
    full = {"attention_mask": mask[:n_full] if isinstance(mask, torch.Tensor) else mask,
            "position_embeddings": (cos[:n_full], sin[:n_full]), "position_ids": position_ids[:n_full]}
    every = {"attention_mask": mask, "position_embeddings": (cos, sin), "position_ids": position_ids}
    light_at = {i: j for j, i in enumerate(layers)}
    config = base.base_model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    top, bottom = hidden[:n_full], hidden[n_full:]  # the base's rows, the light rows
    with base.base_only(), light.per_row(names):
        for i, layer in enumerate(decoder.layers):
            if i in light_at:
                j = light_at[i]
                both = light_decoder.layers[j](torch.cat([top, bottom]), past_key_values=cache if i == j else
                                               _LayerCache(cache, i), use_cache=True, **every)
                top, bottom = both[:n_full], both[n_full:]
            elif n_full:
                top = layer(top, past_key_values=cache, use_cache=True, **full)
            else:  # no base rows (a remote base serves them): the layer's cache keeps in step, with no rows
                empty = hidden.new_zeros((0, config.num_key_value_heads, hidden.shape[1], head_dim))
                cache.update(empty, empty, i)
        return decoder.norm(torch.cat([top, bottom]))
