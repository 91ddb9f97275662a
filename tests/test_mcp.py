"""Agents through MCP: `python app.py --mcp` on the embedded model, as a user starts it, driven by the official `mcp`
client over streamable HTTP and SSE. Every tool it lists is called once with its required arguments only (the
others take the page's defaults), one call each and no page session, and answers a JSON object, also as
structured content; a bad value gets an error naming its field. (Before: generate_<task> failed with "pop index
out of range" and the other tools answered the page's HTML.)"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
from datetime import timedelta

import httpx
import pytest
import requests

from app.config import REPO_ROOT
from app.research import DEFAULT_ALPHAS
from ipa.evaluation.compare import METHODS
from ipa.tasks import TASKS
from tests.helpers import free_port
from tests.test_share import MCP_TOOLS, demo_inputs

pytestmark = pytest.mark.slow

START_TIMEOUT = 300
CALL_TIMEOUT = timedelta(seconds=600)
TASK_TOOLS = ("generate", "compare", "sweep")
TRAINING_TOOLS = ("train_start", "train_objective", "train_status")
"""Called last, in this order: a run trains on the CPU until the app stops."""


@pytest.fixture(scope="module")
def mcp_url(tmp_path_factory):
    """The app started as a user does, with --mcp; its MCP endpoint (streamable HTTP)."""
    root = tmp_path_factory.mktemp("mcp")
    port, log = free_port(), root / "app.log"
    with open(log, "w") as out:
        app = subprocess.Popen([sys.executable, "app.py", "--mcp", "--port", str(port), "--runs-dir", str(root / "runs")],
                               cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/gradio_api/mcp/"
    try:
        deadline = time.time() + START_TIMEOUT
        while not _answers(url):
            if app.poll() is not None or time.time() > deadline:
                pytest.fail(f"app.py --mcp did not start (exit code {app.poll()}):\n{log.read_text()[-3000:]}")
            time.sleep(1)
        yield url
    finally:
        app.send_signal(signal.SIGINT)  # as Ctrl+C: the app stops its training run and closes
        try:
            app.wait(timeout=30)
        except subprocess.TimeoutExpired:
            app.kill()
            app.wait(timeout=30)


def _answers(url: str) -> bool:
    with contextlib.suppress(requests.RequestException):
        return requests.get(url.replace("/mcp/", "/mcp/schema"), timeout=2).ok
    return False


@contextlib.asynccontextmanager
async def session(url: str, transport: str = "http"):
    """An MCP client session over streamable HTTP (`url`) or SSE (`url` + sse), with room for a slow CPU."""
    from mcp import ClientSession
    from mcp.client.sse import sse_client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    if transport == "sse":
        streams = sse_client(url + "sse", timeout=30, sse_read_timeout=CALL_TIMEOUT.total_seconds())
    else:
        streams = streamable_http_client(url, http_client=create_mcp_http_client(
            timeout=httpx.Timeout(30, read=CALL_TIMEOUT.total_seconds())))
    async with streams as (read, write, *_), ClientSession(read, write, read_timeout_seconds=CALL_TIMEOUT) as client:
        await client.initialize()
        yield client


def task_of(tool: str) -> str | None:
    action, _, task = tool.partition("_")
    return task if action in TASK_TOOLS and task in TASKS else None


def required_arguments(tool) -> dict:
    """Only what the tool's schema requires: a task's inputs (its first demo), an adapter or a task to name."""
    task = task_of(tool.name)
    values = demo_inputs(task) if task else {"adapter": "sentiment", "task": "sentiment"}
    return {name: values[name] for name in tool.inputSchema.get("required", [])}


def answer(result) -> dict:
    """The tool's JSON object: its one text, and the same as structured content."""
    assert not result.isError, result.content
    assert len(result.content) == 1 and result.content[0].type == "text"
    data = json.loads(result.content[0].text)
    assert isinstance(data, dict) and result.structuredContent == data
    return data


def check_generation(data: dict, task: str) -> None:
    """Both columns' texts, each sample's reward and its parts, the adapter, settings and seed used."""
    assert data["task"] == task and data["adapter"] and data["steered"] and data["seed"] == 0
    assert set(data["settings"]) == {"n", "max_new_tokens", "temperature", "top_p"}
    for column in ("base", "tailored"):
        samples = data[column]
        assert len(samples) == data["settings"]["n"], column
        for sample in samples:
            parts = set(sample) - {"text", "reward", "mean_kl"}
            assert isinstance(sample["text"], str) and 0 <= sample["reward"] <= 1 and parts, sample
        assert 0 <= data["mean_reward"][column] <= 1


def test_a_bad_value_gets_an_error_naming_its_field_over_sse_too(mcp_url):
    async def calls():
        async with session(mcp_url, "sse") as client:
            return [await client.call_tool("generate_sentiment", arguments) for arguments in (
                {"text": "The day was", "n": 9}, {"text": ""}, {"text": "The day was", "n": "two"}, {"n": 1})]

    errors = asyncio.run(calls())
    assert all(result.isError and result.structuredContent is None for result in errors)
    assert [result.content[0].text for result in errors] == [
        "n must be a whole number from 1 to 4, got 9.",
        "Positive sentiment: the text to continue is missing (field 'text').",
        "'two' is not of type 'number' (field 'n')",
        "'text' is a required property"]


def test_every_tool_answers_a_json_object_when_called_with_its_required_arguments_only(mcp_url):
    async def calls():
        async with session(mcp_url) as client:
            tools = {tool.name: tool for tool in (await client.list_tools()).tools}
            assert set(tools) == MCP_TOOLS
            first = [name for name in tools if name not in TRAINING_TOOLS]
            results = await asyncio.gather(*[client.call_tool(name, required_arguments(tools[name])) for name in first])
            # and one with a progress token: Gradio then takes another path for the answer
            progress = []

            async def noted(*update) -> None:
                progress.append(update)

            results.append(await client.call_tool("try_adapter", {"adapter": "sentiment"}, progress_callback=noted))
            for name in TRAINING_TOOLS:
                results.append(await client.call_tool(name, required_arguments(tools[name])))
            return dict(zip([*first, "try_adapter (progress)", *TRAINING_TOOLS], results)), progress

    results, progress = asyncio.run(calls())
    answers = {name: answer(result) for name, result in results.items()}
    for name, data in answers.items():
        task = task_of(name)
        if name.startswith("generate_"):
            check_generation(data, task)
            assert set(data["inputs"]) == {f.name for f in TASKS[task].fields}
        elif name.startswith("compare_"):
            assert data["task"] == task and data["seed"] == 0 and set(data["methods"]) == set(METHODS)
            assert all(0 <= m["mean_reward"] <= 1 for m in data["methods"].values()) and data["texts"]["ipa"]
        elif name.startswith("sweep_"):
            assert data["task"] == task and data["seed"] == 0 and data["decode"]
            assert [p["alpha"] for p in data["alpha_sweep"]] == [float(a) for a in DEFAULT_ALPHAS.split(",")]
            assert all(0 <= p["mean_reward"] <= 1 for p in data["alpha_sweep"])
    for name in ("try_adapter", "try_adapter (progress)"):  # (not the same texts: the first decoded in a batch)
        check_generation(answers[name], "sentiment")
    assert progress  # the notifications of Gradio's path with a progress token
    assert answers["adapters"] == {"task": "sentiment", "adapters": ["sentiment"]}
    started, objective, status = (answers[name] for name in TRAINING_TOOLS)
    assert started["state"] in ("queued", "running") and started["task"] == "toxicity"  # the page's default task
    assert objective["state"] == "queued" and objective["position"] == 1 and objective["adapter"] != started["adapter"]
    # no session of its own: the run in progress, else the last one
    assert status["adapter"] == (started if status["state"] == "running" else objective)["adapter"]
