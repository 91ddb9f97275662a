"""Share and call (app/share.py, app/share_ui.py, --mcp): the link format round-trips for every task and names each
bad value; a link made from a result with a random seed gives the same text again through the API; the JSON file
holds the API's data; with --mcp the MCP schema lists every action under its API name, each parameter described."""

from __future__ import annotations

import importlib.util
import inspect
import json

import pytest
import requests
import torch
from gradio.utils import get_function_description

from app.config import AppConfig, ConfigError, parse_args
from app.share import LINK_KEYS, link_query, read_link
from app.share_ui import MCP_ENDPOINT_SUFFIX, describe_generate, page_url, result_file, serve_mcp
from ipa.tasks import TASKS

SETTINGS = {"adapter": "sentiment", "alpha": 1.0, "n": 3, "max_new_tokens": 20, "temperature": 1.0, "top_p": 0.9, "seed": 123}


def demo_inputs(task: str) -> dict:
    """A task's first demo, as the page's text boxes hold it (concepts as one comma-separated string)."""
    return {k: ", ".join(v) if isinstance(v, (list, tuple)) else v for k, v in TASKS[task].demos[0].items()}


@pytest.mark.parametrize("task", list(TASKS))
def test_a_link_reads_back_as_the_inputs_and_settings_it_was_made_from(task):
    values = {**demo_inputs(task), **SETTINGS, "alpha": 0.7000000000000001, "top_p": 0.85}
    run = read_link(link_query(task, values))
    assert run.task == task and run.problems == [] and run.complete
    assert run.values == values  # numbers exactly, text exactly


def test_a_link_is_short_and_readable_and_names_a_second_adapter_only_when_there_is_one():
    query = link_query("sentiment", {"text": "The harbour was quiet", **SETTINGS, "adapter_2": "none", "alpha_2": 0.5})
    assert query == ("task=sentiment&text=The+harbour+was+quiet&adapter=sentiment&alpha=1&n=3&max_new_tokens=20"
                     "&temperature=1&top_p=0.9&seed=123")
    composed = link_query("toxicity", {"text": "The fans", **SETTINGS, "adapter_2": "sentiment", "alpha_2": 0.5})
    assert "&adapter=sentiment&alpha=1&adapter_2=sentiment&alpha_2=0.5&n=3" in composed
    assert read_link(composed).values["alpha_2"] == 0.5
    assert "concepts=dog,+frisbee,+catch" in link_query("commongen", {"concepts": "dog, frisbee, catch"})
    assert list(LINK_KEYS[-1:]) == ["seed"]  # the seed last: the part a reader changes to see another sample


@pytest.mark.parametrize("key, value, message", [
    ("alpha", "9", "alpha must be a number from 0 to 5, got 9."),
    ("alpha_2", "-1", "alpha_2 must be a number from 0 to 5, got -1."),
    ("n", "2.5", "n must be a whole number from 1 to 4, got 2.5."),
    ("n", "two", "n must be a number, got 'two'."),
    ("max_new_tokens", "0", "max_new_tokens must be a whole number from 1 to 128, got 0."),
    ("temperature", "nan", "temperature must be a number from 0 to 2, got nan."),
    ("seed", "-5", "seed must be a whole number from 0 to 2147483647, got -5; or -1 for a random seed."),
])
def test_a_bad_value_is_named_with_the_page_range_and_the_rest_is_kept(key, value, message):
    run = read_link(f"task=toxicity&text=The+fans&seed=7&top_p=0.8&{key}={value}")
    assert run.problems == [message] and not run.complete
    assert run.values["text"] == "The fans" and run.values["top_p"] == 0.8 and key not in run.values


def test_an_unknown_task_is_refused_and_unknown_keys_are_ignored():
    run = read_link({"task": "poetry", "text": "x"})
    assert run.task is None and "poetry" in run.problems[0] and "toxicity" in run.problems[0]
    run = read_link("?task=open_ended&text=Once&fbclid=abc&__theme=dark&seed=-1")
    assert run.values == {"text": "Once", "seed": -1} and run.problems == [] and run.complete  # -1: a random seed
    assert not read_link("task=knowledge_dialogue&message=Hi").complete  # the passage is missing


def test_the_link_starts_with_the_page_address_from_the_referer():
    class Request:
        headers = {"Referer": "https://example.org/ipa/?task=toxicity&seed=1"}

    assert page_url(Request()) == "https://example.org/ipa/"
    assert page_url(None) == "" and page_url(type("R", (), {"headers": {}})()) == ""


def test_the_json_file_holds_the_result_as_the_api_returns_it(tmp_path):
    data = {"task": "sentiment", "seed": 41, "base": [{"text": "é", "reward": 0.5}], "tailored": []}
    path = result_file(data, tmp_path)
    assert path.name == "ipa-sentiment-seed41.json" and json.loads(path.read_text(encoding="utf-8")) == data


def test_every_generate_parameter_is_described_for_mcp_clients():
    names = ["knowledge", "message", *LINK_KEYS]

    def generate(*values):
        yield values

    generate.__signature__ = inspect.Signature([inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in names])
    described = describe_generate(generate, TASKS["knowledge_dialogue"])
    description, parameters, returns = get_function_description(described)  # what Gradio's MCP server reads
    assert "Knowledge" in description and returns
    assert all(parameters[n] for n in names), parameters
    assert "from 0 to 5" in parameters["alpha"] and "-1" in parameters["seed"]


def test_mcp_is_a_flag_and_an_environment_variable_and_needs_its_package(monkeypatch):
    assert parse_args(["--mcp"], env={}).mcp and not parse_args([], env={}).mcp
    assert parse_args([], env={"IPA_MCP": "1"}).mcp and parse_args([], env={"GRADIO_MCP_SERVER": "true"}).mcp
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ConfigError, match=r'pip install "gradio\[mcp\]'):
        AppConfig(mcp=True)


# --- through the real app ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_link_from_a_random_seed_result_gives_the_same_text_again(playground_app):
    from gradio_client import Client

    client = Client(playground_app.url, verbose=False)
    values = {**demo_inputs("toxicity"), "adapter": playground_app.service.default_adapter("toxicity") or "none",
              "alpha": 1.0, "n": 2, "max_new_tokens": 8, "temperature": 1.0, "top_p": 0.9, "seed": -1}
    *_, first = client.predict(**values, api_name="/generate_toxicity")
    assert first["seed"] >= 0  # the random seed, made concrete
    run = read_link(link_query("toxicity", {**values, "seed": first["seed"]}))
    assert run.complete
    *_, again = client.predict(**run.values, api_name="/generate_toxicity")
    assert [c["text"] for c in again["base"] + again["tailored"]] == [c["text"] for c in first["base"] + first["tailored"]]


MCP_TOOLS = {f"{action}_{task}" for task in TASKS for action in ("generate", "compare", "sweep")} | {
    "try_adapter", "adapters", "train_start", "train_objective", "train_status"}
"""The tools MCP clients see: every action that needs no page session and moves no file."""


@pytest.mark.slow
def test_with_mcp_the_schema_lists_the_tools_each_parameter_described_and_defaulted_as_the_page(tiny_host, tmp_path):
    """The page built on a tiny model (no reward models needed to build it), launched as app.py does with --mcp.
    tests/test_mcp.py calls every tool on the real app."""
    from app.service import Playground
    from app.ui import build_ui, launch_options
    from tests.helpers import free_port

    config = parse_args(["--mcp", "--port", str(free_port()), "--adapters-dir", str(tmp_path / "none"),
                         "--runs-dir", str(tmp_path / "runs"), "--device", "cpu", "--no-warm-up"], env={})
    service = Playground(config, tiny_host, tiny_host, {}, torch.device("cpu"))
    demo = build_ui(service)
    demo.launch(server_name="127.0.0.1", server_port=config.port, prevent_thread_lock=True, quiet=True,
                **launch_options(config.mcp))
    offered = serve_mcp(demo)
    try:
        url = f"http://127.0.0.1:{config.port}/gradio_api"
        tools = {t["name"]: t for t in requests.get(f"{url}/mcp/schema", timeout=30).json()}
        endpoints = requests.get(f"{url}/info", timeout=30).json()["named_endpoints"]
    finally:
        demo.close()
        service.close()
    # left out: the token inspector (inspect_, branch_) and train_stop need the page's session; the adapter files move zips
    assert set(offered) == set(tools) == MCP_TOOLS
    assert {f"/{name}{MCP_ENDPOINT_SUFFIX}" for name in MCP_TOOLS} <= set(endpoints)
    assert {"/generate_sentiment", "/inspect_sentiment", "/train_stop", "/adapter_upload"} <= set(endpoints)  # the API's
    for name, tool in tools.items():
        assert tool["description"].strip() and "Returns:" in tool["description"], f"{name}: no description of its answer"
        undescribed = [p for p, schema in tool["inputSchema"]["properties"].items() if not schema.get("description")]
        assert not undescribed, f"{name}: parameters without a description: {undescribed}"
    generate = tools["generate_knowledge_dialogue"]["inputSchema"]
    assert generate["required"] == ["knowledge", "message"]  # the page's empty boxes; the rest as the page sets them
    assert generate["properties"]["n"] == {"type": "number", "default": 3, "description": generate["properties"]["n"]["description"]}
    assert "seed" in generate["properties"] and "JSON object" in tools["generate_sentiment"]["description"]
    assert tools["try_adapter"]["inputSchema"]["required"] == ["adapter"]
    assert tools["adapters"]["inputSchema"]["required"] == ["task"]
    assert "prompts_file" not in tools["train_objective"]["inputSchema"]["properties"]  # a file: the page's
    assert not tools["train_start"]["inputSchema"].get("required")
