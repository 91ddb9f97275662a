"""Share and call: under each task's result a link that restores it and a Download JSON button; the page restoring
a link when it opens; the names and descriptions that API and MCP clients read; the MCP tools (`python app.py --mcp`).

Wiring and small handlers only: the link format is app/share.py. A link is restored in the browser as a user would
do it: the page opens the link's tab, fills its inputs and settings (checked with the page's rules; a bad value is
named in the tab's notice and generation waits for the user) and clicks that tab's Generate button, so a restored
result goes through the very same endpoint as a clicked one.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit, urlunsplit

import gradio as gr
from gradio.utils import get_function_description

from ipa.errors import describe_range
from ipa.args import field_docs
from app import share
from app.service import USER_ERRORS, Playground
from app.settings import Settings
from app.training_jobs import TrainRequest
from app.widgets import field_line, first_sentence
from ipa.tasks import Task
from ipa.tasks.objective import PROMPT_SETS

LINK_LABEL = "Share link: opens this tab with these inputs, adapter and settings, and generates the same text"
CLICK_GENERATE = """(task) => {
  if (!task) return;
  // The tab's contents render once it is selected: wait for its button, then click it as a user would.
  const started = Date.now();
  const click = () => {
    const button = document.getElementById(task + "-generate");
    if (button && button.offsetParent !== null) button.click();
    else if (Date.now() - started < 20000) setTimeout(click, 50);
  };
  click();
}"""


@dataclass
class SharePanel:
    """One task tab's share widgets, and the widgets a link fills."""

    task: Task
    link: gr.Textbox
    download: gr.DownloadButton
    parameters: dict[str, gr.components.Component] = field(default_factory=dict)
    """The generate endpoint's parameter name -> its widget, in the endpoint's order."""
    notice: gr.Markdown | None = None
    """Where a link's problems are told (the notice above the columns)."""
    adapter_change: tuple[Callable, list] | None = None
    """The tab's handler for a newly picked adapter (card, alpha, column title) and its outputs: a restored adapter
    shows its card like a picked one, and the link's alpha then replaces the card's."""


def share_panel(task: Task) -> SharePanel:
    """The link and the Download JSON button under a result; both fill in once a result is scored."""
    with gr.Row(equal_height=True, elem_classes="ipa-share"):
        link = gr.Textbox(label=LINK_LABEL, placeholder="Generate: a link to the result appears here", buttons=["copy"],
                          interactive=False, max_lines=3, scale=5, elem_id=f"{task.name}-share-link")
        download = gr.DownloadButton("Download JSON", interactive=False, scale=1, min_width=160,
                                     elem_id=f"{task.name}-download-json")
    return SharePanel(task, link, download)


def page_url(request: gr.Request | None) -> str:
    """The page's address without its query, from the browser's Referer; '' where there is none (a script)."""
    headers = {k.lower(): v for k, v in dict(getattr(request, "headers", None) or {}).items()} if request else {}
    referer = headers.get("referer", "")
    if not referer.startswith(("http://", "https://")):
        return ""
    scheme, netloc, path, _, _ = urlsplit(referer)
    return urlunsplit((scheme, netloc, path, "", ""))


def result_file(data: dict, folder: Path | None = None) -> Path:
    """The result as the API returns it, in a JSON file named after its task and seed."""
    folder = folder or Path(tempfile.mkdtemp(prefix="ipa-result-"))
    path = folder / f"ipa-{data['task']}-seed{data['seed']}.json"
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def wire_result(panel: SharePanel, event, parameters: dict, data: gr.JSON, notice: gr.Markdown,
                adapter_change: tuple[Callable, list]) -> None:
    """After a successful Generate: the link (the seed the result used, a random one made concrete) and the JSON."""
    panel.parameters, panel.notice, panel.adapter_change = dict(parameters), notice, adapter_change

    def share_result(result: dict | None, request: gr.Request, *values):
        if not result or "seed" not in result:
            return gr.skip(), gr.skip()
        given = {**dict(zip(panel.parameters, values)), "seed": result["seed"]}
        query = share.link_query(panel.task.name, given)
        return f"{page_url(request)}?{query}", gr.update(value=str(result_file(result)), interactive=True)

    event.success(share_result, [data, *panel.parameters.values()], [panel.link, panel.download], queue=False,
                  api_visibility="private")


def _link_problems(service: Playground, run: share.SharedRun, panel: SharePanel) -> list[str]:
    """What keeps a checked link from generating on this page: widgets it lacks, adapters it does not have, inputs
    missing or too long (the service's own checks)."""
    problems = list(run.problems)
    missing = [name for name in run.values if name not in panel.parameters]
    if missing:
        problems.append(f"this page has no {', '.join(missing)} (the link comes from a newer playground): left out")
    for name in share.ADAPTER_KEYS:
        adapter = run.values.get(name)
        if adapter not in (None, "", share.NO_ADAPTER) and adapter not in service.adapters:
            problems.append(f"this playground has no adapter called {adapter[:60]!r} (the Your adapters tab can upload one)")
    fields = panel.task.fields
    if not problems and all(run.values.get(f.name) for f in fields):
        try:
            service.check_inputs(panel.task, {f.name: run.values[f.name] for f in fields})
        except USER_ERRORS as err:
            problems.append(str(err).rstrip("."))
    return problems


def restore_on_load(demo: gr.Blocks, tabs: gr.Tabs, panels: dict[str, SharePanel], service: Playground) -> None:
    """When the page opens with a share link's query: select its tab, fill it, and click Generate (only when the
    whole link was good; otherwise the tab's notice says what was wrong and the user decides)."""
    pending = gr.Textbox(visible=False, elem_id="share-pending")
    outputs = {id(c): c for c in (tabs, pending)}
    for panel in panels.values():
        adapter_outputs = panel.adapter_change[1] if panel.adapter_change else []
        outputs.update({id(c): c for c in [*panel.parameters.values(), panel.notice, *adapter_outputs] if c is not None})

    def restore(request: gr.Request):
        query = dict(getattr(request, "query_params", None) or {}) if request else {}
        if "task" not in query:
            return [gr.skip()] * len(outputs)
        run = share.read_link(query)
        name = run.task if run.task in panels else next(iter(panels))
        panel = panels[name]
        given = {k: v for k, v in run.values.items() if k in panel.parameters}
        updates = {id(panel.parameters[k]): v for k, v in given.items()}
        if "adapter" in given and panel.adapter_change:
            change, changed = panel.adapter_change
            updates.update({id(c): v for c, v in zip(changed, change(given["adapter"], given.get("adapter_2")))})
            if "alpha" in given:  # the link's alpha, not the card's
                updates[id(panel.parameters["alpha"])] = given["alpha"]
        problems = _link_problems(service, run, panel) if run.task else run.problems
        missing = [f.label.lower() for f in panel.task.fields if not given.get(f.name)]
        if not run.task:
            updates[id(panel.notice)] = f"**This share link cannot be restored:** {problems[0]}"
        elif problems:
            updates[id(panel.notice)] = ("**This share link was not restored in full:** " +
                                         "; ".join(p.rstrip(".") for p in problems) +
                                         ". The rest is filled in: check it and press Generate.")
        elif missing:
            updates[id(panel.notice)] = f"This share link gives no {' or '.join(missing)}: type it and press Generate."
        updates[id(tabs)] = gr.Tabs(selected=name)
        updates[id(pending)] = name if run.task and not problems and not missing else ""
        return [updates.get(key, gr.skip()) for key in outputs]

    demo.load(restore, None, list(outputs.values()), queue=False, api_visibility="private").then(
        None, pending, None, js=CLICK_GENERATE, api_visibility="private")


# --- what API and MCP clients read --------------------------------------------------------------------------------


def generation_docs() -> dict[str, str]:
    """One line per Generate parameter: the Settings field's own docstring and its range from Settings.LIMITS (the
    rule the service checks), and the adapters."""
    docs = {name: field_line(Settings, name, *limits) for name, limits in Settings.LIMITS.items()}
    return {**docs,
            "adapter": f'The adapter\'s name (the adapters endpoint lists a task\'s), or "{share.NO_ADAPTER}" for the base alone.',
            "alpha": f"Adapter strength, {describe_range(*Settings.LIMITS['alpha'])}: 0 is the base, 1 the trained strength.",
            "adapter_2": f'A second adapter composed with the first (base x adapter^alpha x adapter_2^alpha_2), or "{share.NO_ADAPTER}".',
            "alpha_2": f"The second adapter's strength, {describe_range(*Settings.LIMITS['alpha'])}.",
            "seed": f"Random seed, {describe_range(*Settings.LIMITS['seed'])}, or {Settings.RANDOM_SEED} for a random one (the "
                    "result's seed says which was used); the same seed and settings give the same text."}


def _injected(annotation) -> bool:
    """Whether Gradio fills the parameter in itself (the request, the Hugging Face profile): no API parameter."""
    return annotation in (gr.Request, "gr.Request") or "OAuthProfile" in str(annotation)


def document(fn: Callable, docs: Mapping[str, str], description: str | None = None, returns: str = "") -> Callable:
    """Write the docstring that the API page and MCP clients read (Gradio parses "Parameters:" and "Returns:"): the
    description (else the function's own first paragraph), one line per parameter from `docs`, what it returns.
    A gr.Request or gr.OAuthProfile is not a parameter; a parameter without a line is a mistake, raised here while the
    page is built."""
    params = [p.name for p in inspect.signature(fn).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and not _injected(p.annotation)]
    missing = [name for name in params if name not in docs]
    if missing:
        raise ValueError(f"{fn.__name__}: no description for the parameters {', '.join(missing)}")
    about = description or " ".join((inspect.getdoc(fn) or "").split("\n\n")[0].split())
    lines = [about, "", "Parameters:", *[f"    {name}: {docs[name]}" for name in params]]
    fn.__doc__ = "\n".join(lines + (["", "Returns:", f"    {returns}"] if returns else []))
    return fn


def task_docs(task: Task) -> dict[str, str]:
    """generation_docs and a line for each of the task's input fields."""
    docs = generation_docs()
    for f in task.fields:
        docs[f.name] = f"{f.label}{', separated by commas' if f.kind == 'concepts' else ''}, e.g. {f.placeholder!r}."
    return docs


def describe_generate(fn: Callable, task: Task) -> Callable:
    """Document a task's Generate handler (generate_<task>) for the API page, and its MCP tool."""
    return document(fn, task_docs(task), f"{task.title}: continue the same input with the base model alone and with base + adapter, "
                    f"side by side, and score both with the task's reward, {task.reward} (0 to 1, higher is "
                    "better).", returns="The base column's text, the tailored column's text, their reward panels (HTML), "
                    "the token view, the steering note, the notice, and the result as data: each sample's text, reward "
                    "and its parts, the means with 95 % intervals, the adapter, alpha and the seed used.")


def training_docs(blocks: int) -> dict[str, str]:
    """One line per training parameter, from TrainRequest's field docstrings; the objective builder's rows."""
    docs = {name: first_sentence(doc) for name, doc in field_docs(TrainRequest).items()}
    docs.update(name="The objective's name (letters, digits, - _ .); the adapter is named after it.",
                prompts=f"The prompt set to train on: {', '.join(PROMPT_SETS)}.",
                prompt_lines="Your own prompts instead of the prompt set, one a line (empty: the prompt set).")
    for i in range(1, blocks + 1):
        docs.update({f"block_{i}": f"Block {i}'s reward name, or \"none\" to leave the row out.",
                     f"weight_{i}": f"Block {i}'s weight in the weighted geometric mean.",
                     f"params_{i}": f"Block {i}'s parameters as a JSON object, e.g. {{\"topic\": \"the sea\"}}, or empty."})
    return docs


# --- MCP tools ----------------------------------------------------------------------------------------------------

MCP_ENDPOINT_SUFFIX = "_json"
"""An MCP tool's endpoint is the action's API name with this suffix: generate_toxicity -> /generate_toxicity_json."""
RESULT_JSON = ("The result as a JSON object (the page's Download JSON): task, inputs, adapter, alpha, settings (n, "
               "max_new_tokens, temperature, top_p), seed (the one used), base and tailored (each sample's text, reward "
               "and the reward's parts; tailored also mean_kl), mean_reward and mean_reward_ci95 per column, steered, "
               "warnings; with a second adapter also more and also_scored.")
"""What generate_<task> and try_adapter answer MCP clients (views.scores_data)."""
TRAINING_JSON = ("The run as a JSON object: state (queued, running, done, failed or cancelled), phase, adapter (the "
                 "name its adapter gets), task, algo, position (runs ahead of it), step, progress (0 to 1), history "
                 "(reward and KL per step), samples, reward_before and reward_after (on held-back prompts), error.")
"""What train_start, train_objective and train_status answer MCP clients (TrainingQueue.snapshot)."""
_WIDGET_TYPES = ((gr.Slider, float), (gr.Number, float), (gr.Textbox, str), (gr.Dropdown, str), (gr.Radio, str))


def _tool_parameter(name: str, widget: gr.components.Component | type) -> inspect.Parameter:
    """A tool parameter typed as its page widget's value and defaulting to it, as the page's own endpoint does (a
    widget without a value, like a task's input box, makes it required); a type instead of a widget: required."""
    if isinstance(widget, type):
        return inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=widget)
    kind = next((t for cls, t in _WIDGET_TYPES if isinstance(widget, cls)), None)
    if kind is None:  # a file, say: MCP answers and arguments are text
        raise TypeError(f"{name}: an MCP tool takes text and numbers, not a {type(widget).__name__}")
    default = inspect.Parameter.empty if widget.value is None else widget.value
    return inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=kind, default=default)


def mcp_tool(name: str, answer: Callable[..., dict], page_fn: Callable,
             parameters: Mapping[str, gr.components.Component | type], returns: str, description: str | None = None,
             **api_options) -> None:
    """Offer an action to MCP clients as the tool `name` (serve_mcp lists it): an endpoint of its own,
    <name>_json, whose parameters are the page action's (described by page_fn's docstring, defaulting to the
    page widgets' values) and whose one output is answer(*values, request=...) as JSON text. The description is
    page_fn's unless given; `returns` says what the JSON holds.

    Why not the page's endpoint: Gradio 6.31's MCP server answers with every output of a page event in one text
    (the reward panels' HTML included: an agent would scrape it), and fails with "pop index out of range" on an
    event with a gr.State output (the token inspector's, on Generate): its queued path wraps the outputs in a
    one-item list before taking the state's place out. An endpoint with one output has neither problem. The page's
    endpoint stays as it is, for the page and gradio_client."""
    about, docs, _ = get_function_description(page_fn)
    params = [_tool_parameter(p, widget) for p, widget in parameters.items()]

    def tool(*values):
        *given, request = values
        return json.dumps(answer(*given, request=request), ensure_ascii=False)

    request = inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=gr.Request, default=None)
    tool.__signature__ = inspect.Signature([*params, request], return_annotation=str)
    tool.__annotations__ = {**{p.name: p.annotation for p in params}, "request": gr.Request, "return": str}
    tool.__name__ = tool.__qualname__ = name
    tool.mcp_tool = name
    document(tool, docs, description or about, returns)
    gr.api(tool, api_name=name + MCP_ENDPOINT_SUFFIX, **api_options)


def data_output(page_fn: Callable, outputs: list, data: gr.components.Component) -> Callable[..., dict]:
    """An MCP answer from a page action: its handler run to its end (a streamed one to its last update), and of
    that, the data output: the result the page shows as JSON and offers as a download."""
    index = next(i for i, output in enumerate(outputs) if output is data)

    def answer(*values, request=None):
        result = page_fn(*values)
        if inspect.isgenerator(result):
            *_, result = result
        return result[index]

    return answer


def serve_mcp(demo: gr.Blocks) -> list[str]:
    """Make the MCP server (launch(mcp_server=True, prevent_thread_lock=True), then this) offer exactly the tools
    that mcp_tool made, and answer each with its JSON object also as structured content; returns their names.

    Gradio would offer every public endpoint, the page's among them. Left out so: the actions that need the page's
    session (the token inspector's inspect_<task> and branch_<task> read the session's last Generate; train_stop
    stops the session's run: an MCP call has none) and the adapter files (a zip out, a zip in), which MCP's text
    answers do not carry; gradio_client still calls them all."""
    server = getattr(demo, "mcp_server_obj", None)
    if server is None:
        return []
    server.tool_to_endpoint = {block_fn.fn.mcp_tool: f"/{block_fn.api_name}" for block_fn in demo.fns.values()
                               if getattr(block_fn.fn, "mcp_tool", None)}
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match
    from mcp import types

    handlers = server.mcp_server.request_handlers
    gradio_call = handlers[types.CallToolRequest]

    async def call_tool(request: types.CallToolRequest) -> types.ServerResult:
        """Gradio's call, with two changes for agents: an argument of the wrong type is named (the MCP SDK's own
        check says "'two' is not of type 'number'", not whose), and the answer's JSON object also comes as
        structuredContent (Gradio sends text only), which agents read without parsing."""
        name, arguments = request.params.name, request.params.arguments or {}
        if name in server.tool_to_endpoint:
            schema, _ = server.get_input_schema(name)
            wrong = best_match(Draft202012Validator(schema).iter_errors(arguments))
            if wrong is not None:
                where = ".".join(map(str, wrong.absolute_path))
                message = f"{wrong.message} (field {where!r})" if where else wrong.message  # else: a missing one, named
                return types.ServerResult(types.CallToolResult(content=[types.TextContent(type="text", text=message)],
                                                               isError=True))
        result = await gradio_call(request)
        answer = result.root
        if isinstance(answer, types.CallToolResult) and not answer.isError and len(answer.content) == 1 \
                and isinstance(answer.content[0], types.TextContent):
            with contextlib.suppress(ValueError):
                data = json.loads(answer.content[0].text)
                answer.structuredContent = data if isinstance(data, dict) else None
        return result

    handlers[types.CallToolRequest] = call_tool
    return list(server.tool_to_endpoint)
