"""Share and call: under each task's result a link that restores it and a Download JSON button; the page restoring
a link when it opens; the names and descriptions that API and MCP clients read (`python app.py --mcp`).

Wiring and small handlers only: the link format is app/share.py. A link is restored in the browser as a user would
do it: the page opens the link's tab, fills its inputs and settings (checked with the page's rules; a bad value is
named in the tab's notice and generation waits for the user) and clicks that tab's Generate button, so a restored
result goes through the very same endpoint as a clicked one.
"""

from __future__ import annotations

import inspect
import json
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit, urlunsplit

import gradio as gr

from adapters.checks import describe_range
from adapters.cli import field_docs
from app import share
from app.service import USER_ERRORS, Playground, Settings
from app.training_jobs import TrainRequest
from tasks import Task
from tasks.objective import PROMPT_SETS

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


def _sentence(doc: str) -> str:
    """A field docstring's first sentence, on one line (the API page and MCP show one line per parameter)."""
    text = " ".join(doc.split())
    return text.split(". ")[0].rstrip(".") + "."


def generation_docs() -> dict[str, str]:
    """One line per Generate parameter: the Settings field's own docstring and its range from Settings.LIMITS (the
    rule the service checks), and the adapters."""
    docs = {name: f"{_sentence(doc)[:-1]}; {describe_range(*Settings.LIMITS[name])}."
            for name, doc in field_docs(Settings).items() if name in Settings.LIMITS}
    return {**docs,
            "adapter": f'The adapter\'s name (the adapters endpoint lists a task\'s), or "{share.NO_ADAPTER}" for the base alone.',
            "alpha": f"Adapter strength, {describe_range(*Settings.LIMITS['alpha'])}: 0 is the base, 1 the trained strength.",
            "adapter_2": f'A second adapter composed with the first (base x adapter^alpha x adapter_2^alpha_2), or "{share.NO_ADAPTER}".',
            "alpha_2": f"The second adapter's strength, {describe_range(*Settings.LIMITS['alpha'])}.",
            "seed": f"Random seed, {describe_range(*Settings.LIMITS['seed'])}, or {Settings.RANDOM_SEED} for a random one (the "
                    "result's seed says which was used); the same seed and settings give the same text."}


def document(fn: Callable, docs: Mapping[str, str], description: str | None = None, returns: str = "") -> Callable:
    """Write the docstring that the API page and MCP clients read (Gradio parses "Parameters:" and "Returns:"): the
    description (else the function's own first paragraph), one line per parameter from `docs`, what it returns.
    A gr.Request is not a parameter; a parameter without a line is a mistake, raised here while the page is built."""
    params = [p.name for p in inspect.signature(fn).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.annotation not in (gr.Request, "gr.Request")]
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


def describe_generate(fn: Callable, task: Task, names: list[str]) -> Callable:
    """Name a task's Generate handler generate_<task> (MCP names its tools after the functions) and document it."""
    docs = task_docs(task)
    fn.__name__ = fn.__qualname__ = f"generate_{task.name}"
    return document(fn, docs, f"{task.title}: continue the same input with the base model alone and with base + adapter, "
                    f"side by side (streamed), and score both with the task's reward, {task.reward} (0 to 1, higher is "
                    "better).", returns="The base column's text, the tailored column's text, their reward panels (HTML), "
                    "the token view, the steering note, the notice, and the result as data: each sample's text, reward "
                    "and its parts, the means with 95 % intervals, the adapter, alpha and the seed used.")


def training_docs(blocks: int) -> dict[str, str]:
    """One line per training parameter, from TrainRequest's field docstrings; the objective builder's rows."""
    docs = {name: _sentence(doc) for name, doc in field_docs(TrainRequest).items()}
    docs.update(name="The objective's name (letters, digits, - _ .); the adapter is named after it.",
                prompts=f"The prompt set to train on: {', '.join(PROMPT_SETS)}.",
                prompt_lines="Your own prompts instead of the prompt set, one a line (empty: the prompt set).")
    for i in range(1, blocks + 1):
        docs.update({f"block_{i}": f"Block {i}'s reward name, or \"none\" to leave the row out.",
                     f"weight_{i}": f"Block {i}'s weight in the weighted geometric mean.",
                     f"params_{i}": f"Block {i}'s parameters as a JSON object, e.g. {{\"topic\": \"the sea\"}}, or empty."})
    return docs


def name_tools_after_endpoints(demo: gr.Blocks) -> None:
    """MCP names a tool after its function; name each public action's function after its API name, so that agents
    call generate_toxicity, try_adapter, train_start ... as gradio_client does."""
    for block_fn in demo.fns.values():
        if block_fn.fn is None or not block_fn.api_name or block_fn.api_visibility != "public":
            continue
        try:
            block_fn.fn.__name__ = block_fn.api_name
        except (AttributeError, TypeError):  # a bound method or a builtin keeps its name
            pass


def drop_session_tools(demo: gr.Blocks) -> list[str]:
    """Take the actions that read the page session's state (inspect_<task> and branch_<task> read the session's last
    Generate, a gr.State) off the MCP server's tools: an MCP call has no session, so such a tool could only answer
    "Generate first". gradio_client keeps a session and still calls them. Call after launch(prevent_thread_lock=True),
    once Gradio has made its MCP server; returns the names taken off."""
    server = getattr(demo, "mcp_server_obj", None)
    if server is None:
        return []
    dropped = []
    for name, endpoint in list(server.tool_to_endpoint.items()):
        block_fn = server.get_block_fn_from_endpoint_name(endpoint)
        if block_fn is not None and any(isinstance(component, gr.State) for component in block_fn.inputs):
            del server.tool_to_endpoint[name]
            dropped.append(name)
    return dropped
