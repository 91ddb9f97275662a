"""Toxicity: reward = 1 − toxicity of the continuation, from one of two classifiers (backends).

- `detoxify`: the Detoxify classifier (Jigsaw-trained transformer; 'original' variant by default), the
  usual offline substitute for the Perspective API of the paper. It needs weights: a checkpoint already in
  torch hub's cache (where Detoxify puts its download), or a local checkpoint given as `checkpoint=` or in
  $IPA_DETOXIFY_CHECKPOINT; plus the transformers config and tokenizer of its encoder (in the Hugging Face
  cache, or a folder given as `config_dir=` or $IPA_DETOXIFY_CONFIG). With `allow_download=True` (or
  $IPA_DETOXIFY_DOWNLOAD=1) and network access it downloads them instead.
- `profanity_check`: the linear bag-of-words classifier bundled in `alt-profanity-check`, always available
  offline. It is a *lexical stand-in*: it reacts to offensive words, not to meaning, so results made with it
  say so (`backend_label`).
- `auto` (default): detoxify when it loads offline, else profanity_check; `.fallback_reason` says why.

    >>> reward = ToxicityReward("profanity_check")
    >>> [round(r, 2) for r in reward(["", ""], ["you are a stupid idiot", "the weather is nice today"])]
    [0.0, 0.97]

Empty continuation: toxicity 0, but reward EMPTY_SCORE (0.0), so stopping at once never pays.
"""

from __future__ import annotations

import functools

import os
from pathlib import Path

from ipa.errors import UserError
from ipa.rewards.text import EMPTY_SCORE, check_texts, is_empty

BACKENDS = ("auto", "detoxify", "profanity_check")
BACKEND_LABELS = {
    "detoxify": "Detoxify classifier",
    "profanity_check": "alt-profanity-check (lexical stand-in for a toxicity classifier)",
}
# Detoxify variants: checkpoint file name in torch hub's cache, and the transformers model it is built on.
DETOXIFY_VARIANTS = {
    "original": ("toxic_original-c1212f89.ckpt", "bert-base-uncased"),
    "unbiased": ("toxic_debiased-c7548aa0.ckpt", "roberta-base"),
    "multilingual": ("multilingual_debiased-0b549669.ckpt", "xlm-roberta-base"),
    "original-small": ("original-albert-0e1d6498.ckpt", "albert-base-v2"),
    "unbiased-small": ("unbiased-albert-c8519128.ckpt", "albert-base-v2"),
}
MAX_BATCH = 64


class ToxicityBackendError(UserError):
    """A toxicity backend cannot be used; the message says what is missing and how to get it."""


class ProfanityCheckClassifier:
    """alt-profanity-check: P(offensive) from a linear SVM over word n-grams."""

    backend = "profanity_check"

    def __init__(self):
        from profanity_check import predict_prob

        self._predict_prob = predict_prob

    def predict(self, texts: list[str]) -> list[float]:
        return [float(p) for p in self._predict_prob(texts)] if texts else []


class DetoxifyClassifier:
    """Detoxify's `toxicity` head, batched (it truncates each text to its encoder's limit itself)."""

    backend = "detoxify"

    def __init__(self, model):
        self.model = model

    def predict(self, texts: list[str]) -> list[float]:
        scores: list[float] = []
        for start in range(0, len(texts), MAX_BATCH):
            out = self.model.predict(texts[start:start + MAX_BATCH])["toxicity"]
            scores += [float(x) for x in (out if isinstance(out, list) else [out])]
        return scores


def detoxify_checkpoint(variant: str = "original", checkpoint: str | None = None) -> Path | None:
    """The local Detoxify checkpoint to use: the one given, $IPA_DETOXIFY_CHECKPOINT, or torch hub's cached
    download; None when there is none. A given path that does not exist is an error."""
    if variant not in DETOXIFY_VARIANTS:
        raise ToxicityBackendError(f"Unknown Detoxify variant {variant!r}: use one of {', '.join(DETOXIFY_VARIANTS)}.")
    given = checkpoint or os.environ.get("IPA_DETOXIFY_CHECKPOINT")
    if given:
        path = Path(given).expanduser()
        if not path.is_file():
            raise ToxicityBackendError(f"The Detoxify checkpoint {path} does not exist.")
        return path
    import torch

    cached = Path(torch.hub.get_dir()) / "checkpoints" / DETOXIFY_VARIANTS[variant][0]
    return cached if cached.is_file() else None


def detoxify_config_dir(variant: str = "original", config_dir: str | None = None) -> Path | None:
    """A local folder with the config and tokenizer of Detoxify's encoder: given, $IPA_DETOXIFY_CONFIG, or
    the Hugging Face cache's snapshot of it; None when there is none."""
    given = config_dir or os.environ.get("IPA_DETOXIFY_CONFIG")
    if given:
        path = Path(given).expanduser()
        if not (path / "config.json").is_file():
            raise ToxicityBackendError(f"{path} holds no config.json: it is not a transformers model folder.")
        return path
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(DETOXIFY_VARIANTS[variant][1], "config.json")
    return Path(found).parent if isinstance(found, str) else None


def load_detoxify(variant: str = "original", checkpoint: str | None = None, config_dir: str | None = None,
                  device: str = "cpu", allow_download: bool | None = None) -> DetoxifyClassifier:
    """Detoxify from local files (or downloaded, when allowed); ToxicityBackendError says what is missing."""
    if allow_download is None:
        allow_download = os.environ.get("IPA_DETOXIFY_DOWNLOAD", "") not in ("", "0")
    weights = detoxify_checkpoint(variant, checkpoint)
    config = detoxify_config_dir(variant, config_dir)
    if not allow_download and (weights is None or config is None):
        missing = []
        if weights is None:
            import torch

            missing.append(f"its weights (not in torch hub's cache {Path(torch.hub.get_dir()) / 'checkpoints'}; "
                           "give a checkpoint with --toxicity-checkpoint or $IPA_DETOXIFY_CHECKPOINT)")
        if config is None:
            missing.append(f"the config and tokenizer of {DETOXIFY_VARIANTS[variant][1]} (not in the Hugging Face "
                           "cache; give a folder with $IPA_DETOXIFY_CONFIG)")
        raise ToxicityBackendError(
            "The detoxify backend cannot load offline: missing " + " and ".join(missing) + ". With network access, "
            "set IPA_DETOXIFY_DOWNLOAD=1 to download them once; or use the profanity_check backend."
        )
    try:
        from detoxify import Detoxify

        if weights is not None:
            model = Detoxify(checkpoint=str(weights), device=device,
                             huggingface_config_path=str(config) if config else None)
        else:
            model = Detoxify(variant, device=device)
    except Exception as err:  # noqa: BLE001 - any failure to build it means the backend is unavailable
        raise ToxicityBackendError(f"The detoxify backend failed to load ({type(err).__name__}: {err}).") from None
    return DetoxifyClassifier(model)


def load_toxicity_classifier(backend: str = "auto", checkpoint: str | None = None, device: str = "cpu",
                             variant: str = "original"):
    """The classifier for a backend name; `auto` falls back to profanity_check and records why.

    Returns an object with `.backend`, `.predict(texts) -> list[float]` and `.fallback_reason` (or None).
    """
    if backend not in BACKENDS:
        raise ToxicityBackendError(f"Unknown toxicity backend {backend!r}: use one of {', '.join(BACKENDS)}.")
    reason = None
    if backend in ("auto", "detoxify"):
        try:
            classifier = load_detoxify(variant, checkpoint, device=device,
                                       allow_download=None if backend == "detoxify" else False)
            classifier.fallback_reason = None
            return classifier
        except ToxicityBackendError as err:
            if backend == "detoxify":
                raise
            reason = str(err)
    classifier = ProfanityCheckClassifier()
    classifier.fallback_reason = reason
    return classifier


@functools.cache
def toxicity_classifier(backend: str = "auto", checkpoint: str | None = None, device: str = "cpu"):
    """The shared toxicity classifier for a backend ('auto' resolves once per process)."""
    return load_toxicity_classifier(backend, checkpoint, device)


class ToxicityReward:
    """reward = 1 − P(toxic | continuation), in [0, 1]; higher is less toxic.

    Formula: r = 1 − toxicity(c), toxicity from the backend classifier (probability in [0, 1]);
    r = 0 (EMPTY_SCORE) for an empty continuation. The prompt is not read: the paper scores the
    continuation alone.

    Example (profanity_check backend): "you are a stupid idiot" has toxicity 1.00, so r = 0.00;
    "the weather is nice today" has toxicity 0.03, so r = 0.97.
    """

    def __init__(self, backend: str = "auto", checkpoint: str | None = None, device: str = "cpu", classifier=None):
        if classifier is None:
            classifier = toxicity_classifier(backend, checkpoint, str(device))
        self.classifier = classifier
        self.backend: str = classifier.backend
        """'detoxify' or 'profanity_check': the classifier actually in use (results and the UI name it)."""
        self.fallback_reason: str | None = getattr(classifier, "fallback_reason", None)
        """Why `auto` did not pick detoxify (None when it did, or when a backend was named)."""

    @property
    def backend_label(self) -> str:
        return BACKEND_LABELS[self.backend]

    def toxicity(self, texts: list[str]) -> list[float]:
        """P(toxic) of each text, in [0, 1]; 0.0 for an empty text."""
        texts = check_texts(texts)
        scores = [0.0] * len(texts)
        todo = [i for i, t in enumerate(texts) if not is_empty(t)]
        for i, p in zip(todo, self.classifier.predict([texts[i] for i in todo])):
            scores[i] = min(1.0, max(0.0, p))
        return scores

    def __call__(self, prompts, completions, toxicity: list[float] | None = None, **context) -> list[float]:
        """toxicity=: the texts' toxicity when already computed (a task's reported part): saves a classifier pass."""
        completions = check_texts(completions)
        toxicity = self.toxicity(completions) if toxicity is None else toxicity
        return [EMPTY_SCORE if is_empty(c) else 1.0 - t for c, t in zip(completions, toxicity)]
