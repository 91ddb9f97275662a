"""Policy adapters: LoRA weights (PEFT) over the adapter's initial model, plus optional reward tokens.

An `AdapterHost` holds one frozen model and any number of named LoRA adapters on it. Because the
base weights are shared, rows with and without an adapter run in one batch (PEFT's mixed-batch
`adapter_names`), which is how tailored decoding gets base and adapter logits in one forward pass.

On disk an adapter is a directory:

    adapter_config.json         PEFT's LoRA config
    adapter_model.safetensors   the LoRA weights
    reward_tokens.safetensors   Quark's reward-token embeddings (K, hidden), when the adapter has them
    card.json                   task, models, combination, alpha, training settings, metrics before/after

Loading reads only JSON and safetensors, never pickle. A card is checked field by field whenever one is made, read or
written (AdapterCard.check: types, ranges, known values, lengths): a card from anywhere (shipped, trained, uploaded)
holds a name where a name goes, finite numbers in range, text within ipa.errors.MAX_TEXT_CHARS, and JSON
objects of plain values; what a page shows of it is still escaped there (app.views).

    >>> host = AdapterHost(model, tokenizer, "embedded")              # doctest: +SKIP
    >>> host.new_adapter("mine", AdapterCard(task="toxicity"))        # doctest: +SKIP
    >>> host.save_adapter("mine", "adapters/trained/mine")            # doctest: +SKIP
    >>> card = host.load_adapter("copy", "adapters/trained/mine")     # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import numbers
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors.torch import load_file, save_file
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ipa.errors import MAX_TEXT_CHARS, UserError, check_name, check_number, check_text, quote
from ipa.files import atomic_directory, recover_directory
from ipa.models import light_info, light_layers, parameter_count, parameter_label

CARD_FILE = "card.json"
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
REWARD_TOKENS_FILE = "reward_tokens.safetensors"
FORMAT_VERSION = 1
COMBINATIONS = ("residual", "paper")
"""How an adapter's logits join the base's (ipa.decoding.policy_math.compose_logits)."""
ALGORITHMS = ("pg", "quark")
"""The training algorithms (ipa.training.config); a card says 'none' for an adapter never trained."""
MAX_ALPHA = 10.0
"""The strongest adapter strength anything decodes or trains with (DecodeConfig's alpha), and a card's alpha."""
MAX_LORA_R = 256
MAX_REWARD_TOKENS = 256
MAX_CARD_KB = 256
"""The largest card.json read (this project's are about 5 KB): a card is read whole and kept in memory."""
MAX_CARD_DEPTH = 8
"""How deep a card's JSON objects may nest (its training settings nest 3 deep)."""
METRIC_OBJECTS = ("metrics_before", "metrics_after")
"""The card's objects of metrics (name -> a number, or null where not measured; 'label' is text), and the
evaluation's (EVALUATION_METRICS)."""
EVALUATION_METRICS = ("base", "tailored", "untrained")


class AdapterError(UserError):
    """An adapter could not be created, saved or loaded; the message says why and what to do."""


@dataclass
class AdapterCard:
    """What a saved adapter is and how it was made (card.json)."""

    task: str = "custom"
    """The task the adapter was trained for (a key of ipa.tasks.TASKS, or 'custom')."""
    objective: dict = field(default_factory=dict)
    """For task 'custom': the objective it was trained for, as in its JSON file (ipa.rewards.objective); {} otherwise."""
    base_model: str = "embedded"
    """The base model it was trained to steer."""
    adapter_init_model: str = "embedded"
    """The model whose weights the LoRA adapter sits on."""
    init_fingerprint: dict = field(default_factory=dict)
    """Shape facts of the initial model (type, hidden size, layers, vocabulary), checked at load."""
    combination: str = "residual"
    """How adapter and base logits combine: 'residual' or 'paper' (see ipa.decoding.policy_math.compose_logits)."""
    alpha: float = 1.0
    """The adapter strength it was trained with and is shown with by default."""
    algorithm: str = "none"
    """The training algorithm: 'pg', 'quark' or 'none' (untrained)."""
    n_reward_tokens: int = 0
    """Quark's reward quantiles; 0 when the adapter uses no reward tokens."""
    lora_r: int = 8
    """LoRA rank."""
    lora_alpha: int = 16
    """LoRA scaling numerator (scaling = lora_alpha / r)."""
    training: dict = field(default_factory=dict)
    """The training settings (TrainConfig as a dict)."""
    steps: int = 0
    """Training steps done."""
    train_seconds: float = 0.0
    """Wall-clock training time."""
    machine: str = ""
    """Where it was trained (device name)."""
    metrics_before: dict = field(default_factory=dict)
    """Held-back evaluation of the untrained adapter (the base policy)."""
    metrics_after: dict = field(default_factory=dict)
    """Held-back evaluation after training."""
    evaluation: dict = field(default_factory=dict)
    """The latest `ipa.evaluation.evaluate --write-card` report: base and tailored metrics (ipa.tasks.metrics), n_prompts,
    samples_per_prompt, seed, command, date; empty until one is written. The page prefers it to the training-time
    metrics_before/after (fewer prompts)."""
    created: str = ""
    """When the adapter was saved (UTC, ISO 8601)."""
    format_version: int = FORMAT_VERSION
    """On-disk format version."""

    def __post_init__(self):
        self.check()

    def check(self) -> None:
        """AdapterError naming the first field that is not what a card holds: the task a name (never a path), the
        combination and algorithm known ones, numbers finite and in range (whole where they count), texts one line
        within MAX_TEXT_CHARS, the dicts JSON objects of plain values (text within MAX_TEXT_CHARS, finite numbers,
        true/false/null) nested at most MAX_CARD_DEPTH deep, metrics numbers or null. Run when a card is made, read
        (read_card: shipped, trained and uploaded cards alike) and written (save_adapter, update_card)."""
        check_name(self.task, "task", error=AdapterError)
        for name in ("base_model", "adapter_init_model", "machine", "created"):
            _check_line(getattr(self, name), name)
        if self.combination not in COMBINATIONS:
            raise AdapterError(f"Unknown combination {quote(self.combination)}: use one of {', '.join(COMBINATIONS)}.")
        if self.algorithm not in (*ALGORITHMS, "none"):
            raise AdapterError(f"Unknown algorithm {quote(self.algorithm)}: a card says one of {', '.join(ALGORITHMS)} "
                               "or none (untrained).")
        self.alpha = check_number(self.alpha, "alpha", 0, MAX_ALPHA, error=AdapterError)
        self.n_reward_tokens = check_number(self.n_reward_tokens, "n_reward_tokens (0: no reward tokens, else Quark's "
                                            "quantiles)", 0, MAX_REWARD_TOKENS, whole=True, error=AdapterError)
        self.lora_r = check_number(self.lora_r, "lora_r", 1, MAX_LORA_R, whole=True, error=AdapterError)
        self.lora_alpha = check_number(self.lora_alpha, "lora_alpha", 1, 16 * MAX_LORA_R, whole=True, error=AdapterError)
        self.steps = check_number(self.steps, "steps", 0, 10**9, whole=True, error=AdapterError)
        self.train_seconds = check_number(self.train_seconds, "train_seconds", 0, 10**9, error=AdapterError)
        if self.format_version != FORMAT_VERSION or isinstance(self.format_version, bool):
            raise AdapterError(f"format_version {quote(self.format_version)} is not one this project reads "
                               f"({FORMAT_VERSION}): the adapter was made by another version of it.")
        for name in ("objective", "init_fingerprint", "training", "metrics_before", "metrics_after", "evaluation"):
            value = getattr(self, name)
            if not isinstance(value, dict):
                raise AdapterError(f"{name} must be a JSON object, got {quote(value)}.")
            _check_json(value, name)
        metrics = [(name, getattr(self, name)) for name in METRIC_OBJECTS]
        metrics += [(f"evaluation.{name}", self.evaluation[name]) for name in EVALUATION_METRICS if name in self.evaluation]
        for where, values in metrics:
            if not isinstance(values, dict):
                raise AdapterError(f"{where} must be a JSON object of metrics, got {quote(values)}.")
            for key, value in values.items():
                if key == "label":
                    _check_line(value, f"{where}.label")
                elif value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
                    raise AdapterError(f"{where}.{key} must be a number or null, got {quote(value)}.")
        # what the page shows of the evaluation besides its metrics
        for key, high in {"n_prompts": 10**9, "samples_per_prompt": 10**9, "seed": 2**63 - 1}.items():
            if self.evaluation.get(key) is not None:
                check_number(self.evaluation[key], f"evaluation.{key}", 0, high, whole=True, error=AdapterError)
        if self.evaluation.get("date") is not None:
            _check_line(self.evaluation["date"], "evaluation.date")

    @classmethod
    def from_dict(cls, data: dict) -> "AdapterCard":
        """A card from its JSON object (fields this version does not know are left out), checked (check)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_json(self) -> str:
        """card.json's text, after check: the project never writes a card it would not read back."""
        self.check()
        return json.dumps(asdict(self), indent=2, allow_nan=False)


def _check_line(value, name: str) -> None:
    """AdapterError unless `value` is one line of text within MAX_TEXT_CHARS (a field the page shows on its line)."""
    check_text(value, name, error=AdapterError)
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise AdapterError(f"{name} must be one line of text without control characters, got {quote(value)}.")


def _check_json(value, where: str, depth: int = 0) -> None:
    """AdapterError unless `value` is plain JSON: objects with text keys, lists, text within MAX_TEXT_CHARS, finite
    numbers, true, false or null, nested at most MAX_CARD_DEPTH deep."""
    if depth > MAX_CARD_DEPTH:
        raise AdapterError(f"{where} is nested more than {MAX_CARD_DEPTH} deep.")
    if isinstance(value, dict):
        for key, item in value.items():
            check_text(key, f"a key of {where}", 200, error=AdapterError)
            _check_json(item, f"{where}.{key}", depth + 1)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_json(item, f"{where}[{i}]", depth + 1)
    elif isinstance(value, str):
        check_text(value, where, MAX_TEXT_CHARS, error=AdapterError)
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise AdapterError(f"{where} must be a finite number, got {value!r}.")
    elif value is not None and not isinstance(value, bool):
        raise AdapterError(f"{where} must be text, a number, true, false, null, a list or an object, got "
                           f"{type(value).__name__}.")


def model_fingerprint(model: PreTrainedModel) -> dict:
    """Shape facts that an adapter's LoRA weights depend on; for a light model (ipa.models.light_info) also the
    digest of the weights it was cut with, so that an adapter trained on the light cut of one model does not load
    on the light cut of another of the same shape."""
    config = model.config
    fingerprint = {
        "model_type": config.model_type,
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_hidden_layers,
        "vocab_size": config.vocab_size,
    }
    light = light_info(model)
    if light is not None:
        fingerprint.update(light_of_layers=light["source_layers"], light_digest=light["digest"])
    return fingerprint


def lora_config(r: int = 8, lora_alpha: int = 16) -> LoraConfig:
    """LoRA on every linear layer but the LM head. r = 8 keeps a 135M adapter under 10 MB in float32."""
    return LoraConfig(r=r, lora_alpha=lora_alpha, lora_dropout=0.0, target_modules="all-linear", bias="none")


class AdapterHost:
    """One frozen model carrying named LoRA adapters; rows with and without an adapter share a batch.

    The wrapped model never trains: only LoRA weights and reward-token embeddings get gradients.
    """

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, model_name: str):
        model.requires_grad_(False)
        self.base_model = model
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.peft: PeftModel | None = None
        self.cards: dict[str, AdapterCard] = {}
        self.reward_embeddings: dict[str, torch.nn.Parameter] = {}
        self._trainable: set[str] = set()
        self._lora_layers: list[BaseTunerLayer] = []
        self._per_row_plans: dict[tuple, dict[int, Callable]] = {}
        """The routes of recent per_row calls by their runs, reused while a batch's runs stay the same."""
        self._base_route: dict[int, Callable] = {}
        """Each LoRA layer to its base layer (base_only's route), made when the layers change."""
        self._routes: dict[int, dict[int, Callable]] = {}
        """Thread id -> (id of a LoRA layer -> what that layer runs in that thread), while the thread is inside
        base_only or per_row: what one thread runs never changes what another runs through the same model."""
        self._light_layers: dict[int, list[int] | None] = {}

    # --- the model to call ---------------------------------------------------------------------
    @property
    def model(self) -> torch.nn.Module:
        """The model to run: the PEFT wrapper once an adapter exists, else the plain model."""
        return self.peft if self.peft is not None else self.base_model

    def to(self, device: torch.device) -> None:
        """Move the model, its adapters and their reward-token embeddings to `device` (nothing when already there)."""
        if self.base_model.device == torch.device(device):
            return
        self.model.to(device)
        for embedding in self.reward_embeddings.values():
            embedding.data = embedding.data.to(device)

    @property
    def adapter_names(self) -> list[str]:
        return list(self.cards)

    @functools.cached_property
    def size_label(self) -> str:
        """The model's parameter count as the page says it: '42M' (LoRA weights left out)."""
        return parameter_label(parameter_count(self.base_model))

    def light_layers(self, base: "AdapterHost") -> list[int] | None:
        """When this host's model is a light cut of `base`'s (ipa.models.light_layers), the base's layers it runs;
        None for any other model. Checked once per base (comparing the weights takes about 0.1 s); a ModelLoadError
        naming both models when it is a light model cut from another."""
        if id(base) not in self._light_layers:
            self._light_layers[id(base)] = light_layers(base.base_model, base.model_name, self.base_model, self.model_name)
        return self._light_layers[id(base)]

    @contextlib.contextmanager
    def base_only(self):
        """Run the model with every adapter switched off (the frozen base / adapter-init model), in this thread.

        Routes each LoRA layer to its base layer for the calling thread only (other threads keep what they run): PEFT's
        own `disable_adapter()` walks every module and resets requires_grad on the way out, which cost 20-40 ms a
        call, twice per decoding step, and switches the adapters off for every thread.
        """
        if self.peft is None:
            yield self.base_model
            return
        with self._routed(self._base_route):
            yield self.peft

    @contextlib.contextmanager
    def per_row(self, names: list[str | None]):
        """Run the model with a LoRA adapter chosen per batch row (None: adapter off), in one forward pass, in this thread.

        Each LoRA layer computes its base output for every row, then adds the low-rank delta
        `scale · B_a (A_a x)` to each run of consecutive rows that share adapter a; rows without an adapter
        get nothing added. Multi-LoRA servers (S-LoRA, Punica) batch rows with different adapters this way.
        It replaces PEFT's `adapter_names` mixed batch, whose per-layer bookkeeping cost about as much as the
        model's own matrix products on a CPU. Keep rows sorted by adapter so that the runs are few.
        The weights are read at each call, so an adapter being trained is decoded with its current values.
        """
        runs = []  # (start, end, adapter name) for each run of rows with the same adapter
        for r, name in enumerate(names):
            if name is None:
                continue
            if runs and runs[-1][2] == name and runs[-1][1] == r:
                runs[-1][1] = r + 1
            else:
                self._check_name(name)
                runs.append([r, r + 1, name])
        if not runs:
            with self.base_only() as model:
                yield model
            return
        key = tuple(map(tuple, runs))
        route = self._per_row_plans.get(key)
        if route is None:  # a batch's composition changed (a request joined or left)
            route = {}
            for layer in self._lora_layers:
                deltas = [(start, end, layer.lora_A[name].weight, layer.lora_B[name].weight, layer.scaling[name])
                          for start, end, name in runs if name in layer.lora_A]
                route[id(layer)] = functools.partial(_per_row_lora_forward, layer.base_layer, deltas)
            if len(self._per_row_plans) >= 8:  # a few recent batches' plans
                self._per_row_plans.clear()
            self._per_row_plans[key] = route
        with self._routed(route):
            yield self.peft

    @contextlib.contextmanager
    def _routed(self, route: dict[int, Callable]):
        """Let each LoRA layer run route[id(layer)] instead of its own forward, in the calling thread only."""
        me = threading.get_ident()
        previous = self._routes.get(me)
        self._routes[me] = route
        try:
            yield
        finally:
            if previous is None:
                del self._routes[me]
            else:
                self._routes[me] = previous

    def _found_layers(self) -> None:
        """The PEFT model's LoRA layers, each sent through _routed_forward (once), after adapters came or went."""
        self._lora_layers = [m for m in self.peft.modules() if isinstance(m, BaseTunerLayer)] if self.peft else []
        for layer in self._lora_layers:
            if "forward" not in vars(layer):
                layer.forward = functools.partial(_routed_forward, layer, self._routes)
        self._base_route = {id(layer): layer.base_layer for layer in self._lora_layers}
        self._per_row_plans = {}

    @contextlib.contextmanager
    def only(self, name: str):
        """Run the model with exactly adapter `name` active."""
        self._check_name(name)
        if self.peft.active_adapter != name:
            self.peft.set_adapter(name)
            # set_adapter also changes requires_grad; only set_trainable decides that here.
            for other in self.cards:
                self.set_trainable(other, other in self._trainable)
        yield self.peft

    def input_embeddings(self) -> torch.nn.Embedding:
        return self.base_model.get_input_embeddings()

    def trainable_parameters(self, name: str) -> list[torch.nn.Parameter]:
        """The parameters training may change: LoRA weights of `name` and its reward-token embeddings."""
        self._check_name(name)
        params = [p for n, p in self.peft.named_parameters() if "lora_" in n and f".{name}." in n]
        if name in self.reward_embeddings:
            params.append(self.reward_embeddings[name])
        return params

    def set_trainable(self, name: str, trainable: bool) -> None:
        """Let training change adapter `name` (or freeze it again)."""
        for param in self.trainable_parameters(name):
            param.requires_grad_(trainable)
        if trainable:
            self._trainable.add(name)
        else:
            self._trainable.discard(name)

    # --- creating, saving, loading ---------------------------------------------------------------
    def new_adapter(self, name: str, card: AdapterCard) -> None:
        """Add a fresh adapter: LoRA B = 0, so it changes nothing until trained."""
        if name in self.cards:
            raise AdapterError(f"An adapter named {name!r} is already loaded.")
        card.adapter_init_model = self.model_name
        card.init_fingerprint = model_fingerprint(self.base_model)
        self._inject(name, lora_config(card.lora_r, card.lora_alpha))
        if card.n_reward_tokens:
            # Reward tokens start as copies of an existing token's embedding (BOS, else EOS), one per quantile.
            token_id = self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else self.tokenizer.eos_token_id
            start = self.input_embeddings().weight[token_id].detach().float()
            embeddings = start.expand(card.n_reward_tokens, -1).clone()
            self.reward_embeddings[name] = torch.nn.Parameter(embeddings.to(self.input_embeddings().weight.device))
        self.cards[name] = card
        self.set_trainable(name, False)

    def _inject(self, name: str, config: LoraConfig) -> None:
        if self.peft is None:
            self.peft = get_peft_model(self.base_model, config, adapter_name=name)
        else:
            self.peft.add_adapter(name, config)
        self.peft.eval()
        self._found_layers()

    def save_adapter(self, name: str, directory: str | os.PathLike) -> Path:
        """Write the adapter atomically (ipa.files.atomic_directory) and return its directory."""
        self._check_name(name)
        card = self.cards[name]
        card.created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        weights = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(self.peft, adapter_name=name).items()}
        config = self.peft.peft_config[name].to_dict()
        config["base_model_name_or_path"] = card.adapter_init_model
        config = {k: (sorted(v) if isinstance(v, set) else v) for k, v in config.items()}
        with atomic_directory(directory) as tmp:
            save_file(weights, tmp / WEIGHTS_FILE)
            (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, default=str))
            if name in self.reward_embeddings:
                save_file({"reward_embeddings": self.reward_embeddings[name].detach().cpu().contiguous()}, tmp / REWARD_TOKENS_FILE)
            (tmp / CARD_FILE).write_text(card.to_json())
        return Path(directory)

    def load_adapter(self, name: str, directory: str | os.PathLike) -> AdapterCard:
        """Load a saved adapter under `name`; clear errors for a missing, corrupt or mismatched one."""
        directory = Path(directory)
        card = read_card(directory)
        if card.init_fingerprint and card.init_fingerprint != model_fingerprint(self.base_model):
            raise AdapterError(
                f"The adapter in {directory} was made for {card.adapter_init_model!r} "
                f"({_describe(card.init_fingerprint)}), but the loaded adapter model is {self.model_name!r} "
                f"({_describe(model_fingerprint(self.base_model))}). Load it with the model it was trained on."
            )
        if name in self.cards:
            raise AdapterError(f"An adapter named {name!r} is already loaded.")
        required = [CONFIG_FILE, WEIGHTS_FILE] + ([REWARD_TOKENS_FILE] if card.n_reward_tokens else [])
        for file_name in required:
            if not (directory / file_name).is_file():
                raise AdapterError(f"{directory} is not a complete adapter: {file_name} is missing.")
        try:
            config_dict = json.loads((directory / CONFIG_FILE).read_text())
            known = set(LoraConfig.__dataclass_fields__)
            config = LoraConfig(**{k: v for k, v in config_dict.items() if k in known and k != "peft_type"})
            config.base_model_name_or_path = getattr(self.base_model, "name_or_path", None)
            weights = load_file(directory / WEIGHTS_FILE)
        except Exception as err:  # noqa: BLE001 - any parse failure means a corrupt file
            raise AdapterError(f"{directory} holds a corrupt adapter ({type(err).__name__}: {err}).") from None
        self._inject(name, config)
        try:
            result = set_peft_model_state_dict(self.peft, weights, adapter_name=name)
            missing = [k for k in result.missing_keys if "lora_" in k and f".{name}." in k]
            if missing or result.unexpected_keys:
                raise AdapterError(
                    f"{directory} does not fit the model: {len(missing)} LoRA weights missing, "
                    f"{len(result.unexpected_keys)} unexpected."
                )
            if card.n_reward_tokens:
                tokens = load_file(directory / REWARD_TOKENS_FILE)["reward_embeddings"]
                hidden = self.input_embeddings().weight.shape[1]
                if tuple(tokens.shape) != (card.n_reward_tokens, hidden):
                    raise AdapterError(f"{directory}: reward tokens have shape {tuple(tokens.shape)}, expected ({card.n_reward_tokens}, {hidden}).")
                self.reward_embeddings[name] = torch.nn.Parameter(tokens.to(self.input_embeddings().weight.device))
        except Exception as err:
            self._remove(name)
            if isinstance(err, AdapterError):
                raise
            raise AdapterError(f"{directory} holds a corrupt adapter ({type(err).__name__}: {err}).") from None
        self.peft.eval()
        self.cards[name] = card
        self.set_trainable(name, False)
        return card

    def delete_adapter(self, name: str) -> None:
        self._check_name(name)
        self._remove(name)
        self.cards.pop(name)
        self.reward_embeddings.pop(name, None)
        self._trainable.discard(name)

    def _remove(self, name: str) -> None:
        """Take adapter `name` out of the PEFT model; without adapters left, back to the plain model.

        PEFT keeps a deleted adapter's name as the active one when it was the last, and its next
        forward fails on the missing config, so the last deletion unloads the LoRA layers instead.
        """
        if len(self.peft.peft_config) == 1:
            self.peft.unload()
            self.peft = None
            self._found_layers()
            return
        self.peft.delete_adapter(name)
        self._found_layers()

    def reward_token_embedding(self, name: str, quantile: int | None = None) -> torch.Tensor | None:
        """The embedding (hidden,) of a reward token; by default the best quantile's (index 0)."""
        if name not in self.reward_embeddings:
            return None
        return self.reward_embeddings[name][0 if quantile is None else quantile]

    def _check_name(self, name: str) -> None:
        if name not in self.cards:
            known = ", ".join(self.cards) or "none"
            raise AdapterError(f"No adapter named {name!r} is loaded (loaded: {known}).")


def _routed_forward(layer: BaseTunerLayer, routes: dict[int, dict[int, Callable]], x: torch.Tensor, *args, **kwargs):
    """A LoRA layer's forward: what AdapterHost's base_only or per_row chose for it in this thread, else PEFT's."""
    route = routes.get(threading.get_ident())
    if route is None:
        return type(layer).forward(layer, x, *args, **kwargs)
    return route[id(layer)](x, *args, **kwargs)


def _per_row_lora_forward(base_layer: torch.nn.Linear, deltas: list, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """A LoRA layer's output with each run of rows getting its own adapter's delta.  x (R, T, in) -> (R, T, out)"""
    out = torch.nn.functional.linear(x, base_layer.weight, base_layer.bias)
    for start, end, lora_a, lora_b, scale in deltas:
        # (n, T, in) -> (n, T, r) -> (n, T, out), in the LoRA weights' dtype (PEFT keeps them in float32 under a
        # bfloat16 model; tiny bfloat16 matrix products cost 3-6 x their float32 twins on a CPU)
        rows = x[start:end].to(lora_a.dtype)
        out[start:end] += ((rows @ lora_a.t()).mul_(scale) @ lora_b.t()).to(out.dtype)
    return out


def read_card(directory: str | os.PathLike) -> AdapterCard:
    """Read an adapter's card, checked (AdapterCard.check), with one clear error for a missing directory or file,
    a file over MAX_CARD_KB, bad JSON, and the first field that is not valid."""
    directory = recover_directory(directory)  # the previous adapter, if a save was interrupted
    if not directory.is_dir():
        raise AdapterError(f"The adapter directory {directory} does not exist.")
    path = directory / CARD_FILE
    if not path.is_file():
        raise AdapterError(f"{directory} is not an adapter: it has no {CARD_FILE}.")
    size_kb = path.stat().st_size / 1024
    if size_kb > MAX_CARD_KB:
        raise AdapterError(f"{path} is {size_kb:,.0f} KB; an adapter's card is at most {MAX_CARD_KB} KB.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except (ValueError, TypeError) as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise AdapterError(f"{path} is corrupt ({err}).") from None
    try:
        return AdapterCard.from_dict(data)
    except AdapterError as err:
        raise AdapterError(f"{path} is not a valid adapter card: {err}") from None


def update_card(directory: str | os.PathLike, **changes) -> AdapterCard:
    """Change fields of a saved adapter's card (e.g. `evaluation=`), keeping every other field as written, and
    replace card.json atomically (a temporary file, then a rename)."""
    unknown = set(changes) - {f.name for f in fields(AdapterCard)}
    if unknown:
        raise AdapterError(f"Unknown card fields: {', '.join(sorted(unknown))}.")
    read_card(directory)  # the same clear errors for a missing or corrupt card
    path = Path(directory) / CARD_FILE
    data = {**json.loads(path.read_text(encoding="utf-8")), **changes}
    card = AdapterCard.from_dict(data)  # bad values fail here, before anything is written
    tmp = path.with_name(f".{CARD_FILE}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, allow_nan=False))
    os.replace(tmp, path)
    return card


def _describe(fingerprint: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in fingerprint.items())
