"""The real playground served in-process for tests: service + page on a free port (see conftest's `playground_app`).

Adapters: the shipped ones in adapters/trained when a toxicity adapter is there (so that the browser test's
screenshot shows the real thing), else a stand-in for the toxicity task made here in a second (random LoRA
weights: it steers, it is not trained). The other tasks may then have no adapter, which exercises the page's
"no adapter: the right column is the base" path.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from ipa.policy_adapter import AdapterCard, AdapterHost
from app.config import REPO_ROOT, AppConfig, ModelsConfig
from app.service import Playground
from tests.helpers import free_port, perturb_lora

SHIPPED_DIR = REPO_ROOT / "adapters" / "trained"


@dataclass
class ServedApp:
    url: str
    service: Playground
    demo: object
    runs_dir: Path


def stand_in_adapters(root: Path, host: AdapterHost) -> Path:
    """A folder holding one steering (untrained, random-LoRA) adapter named 'toxicity'."""
    folder = root / "adapters"
    host.new_adapter("app-test", AdapterCard(task="toxicity", algorithm="pg", steps=1, alpha=1.0))
    try:
        perturb_lora(host, "app-test", scale=0.02)
        host.save_adapter("app-test", folder / "toxicity")
    finally:
        host.delete_adapter("app-test")
    return folder


@contextlib.contextmanager
def serve_playground(root: Path, get_host, **settings):
    """Start the playground as app.py does (queue with limits, theme, CSS) and stop it afterwards.

    get_host: returns an AdapterHost to make the stand-in adapter with (called only when one is needed).
    settings: more AppConfig fields (class mode's sign-in, code and teacher's secret)."""
    from app.ui import build_ui, launch_options, queue_options

    adapters_dir = SHIPPED_DIR if (SHIPPED_DIR / "toxicity" / "card.json").is_file() else stand_in_adapters(root, get_host())
    # float32: the API tests check that requests decoded together give exactly what each gives alone, which holds
    # in float32 (bfloat16 rounds differently with the batch's shape; tests/test_engine.py bounds that instead).
    config = AppConfig(adapters_dir=str(adapters_dir), runs_dir=str(root / "runs"),
                       models=ModelsConfig(device="cpu", dtype="float32"), port=free_port(), warm_up=True, **settings)
    service = Playground.load(config)
    demo = build_ui(service)
    demo.queue(**queue_options(config.concurrency, config.queue_size))
    demo.launch(server_name="127.0.0.1", server_port=config.port, prevent_thread_lock=True, quiet=True,
                **launch_options())
    try:
        yield ServedApp(f"http://127.0.0.1:{config.port}/", service, demo, Path(config.runs_dir))
    finally:
        service.close()
        demo.close()
