"""The Gradio page: one tab per task, a training tab; widgets wired to the service, nothing heavy.

    >>> demo = build_ui(service)                                       # doctest: +SKIP
    >>> demo.queue(**queue_options(config)).launch(**launch_options())  # doctest: +SKIP

API names (for gradio_client): generate_<task> for each of the six tasks (a second, composed adapter: adapter_2 and
alpha_2), inspect_<task> and branch_<task> (the token inspector, app/inspector_ui.py), compare_<task> and sweep_<task>
(app/research_ui.py), train_start, train_stop, train_objective, train_status, adapters, try_adapter, adapter_download,
adapter_delete and adapter_upload; with --mcp those that need no page session and move no file are also MCP tools
answering JSON (app/share_ui.py: mcp_tool, serve_mcp).
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from pathlib import Path
from collections.abc import Mapping
from typing import Callable

import gradio as gr

from app import adapter_files, class_ui, gradio_sessions, inspector_ui, share_ui, views, widgets
from app.classroom import Classroom
from app.widgets import (NO_ADAPTER, as_page_errors, bound, checked_by_service, field_widget, local_browser, user_error,
                         with_parameters)
from app.adapter_store import SHIPPED, AdapterStore
from app.config import ServiceError
from app.objective_form import MAX_PROMPT_LINES, MAX_PROMPTS_KB, NO_BLOCK, PAGE_BLOCKS, PROMPT_FILE_TYPES, page_objective
from app.service import USER_ERRORS, Playground
from app.settings import Settings
from app.research_ui import research_panels
from app.training_jobs import PAGE_FIELDS, TrainRequest
from app.training_service import TrainingService
from ipa.rewards.objective import block_rewards
from ipa.tasks import TASKS, InputField, Task
from ipa.tasks.objective import DEFAULT_PROMPT_SET, MIN_FILE_PROMPTS, PROMPT_SETS

log = logging.getLogger("ipa.ui")

"""The dropdown value for 'no adapter' (the right column is then the base)."""
THEME = gr.themes.Soft(primary_hue="indigo", secondary_hue="rose")
CSS = """
.ipa-reward {padding: 10px 12px; border: 1px solid var(--border-color-primary); border-radius: 8px; background: var(--background-fill-secondary);}
.ipa-pending {color: var(--body-text-color-subdued); font-style: italic;}
.ipa-reward-head {display: flex; flex-wrap: wrap; align-items: baseline; gap: 4px 10px; font-size: 1.05em;}
.ipa-reward-head b {font-size: 1.6em;}
.ipa-delta {font-weight: 600; border-radius: 4px; padding: 0 6px; white-space: nowrap;}
.ipa-delta.up {color: #15803d; background: #dcfce7;} .ipa-delta.down {color: #b91c1c; background: #fee2e2;}
.ipa-delta.same {color: #555; background: #eee;}
.ipa-bar {height: 12px; background: var(--border-color-primary); border-radius: 6px; overflow: hidden; margin: 4px 0 8px;}
.ipa-bar > div {height: 100%; background: #16a34a; border-radius: 6px;}
.ipa-bar.small {height: 7px; margin: 0; flex: 1;}
.ipa-bar.small > div {background: #6366f1;} .ipa-bar.bad > div {background: #dc2626;}
.ipa-bar.progress > div {background: #6366f1;}
.ipa-part {display: flex; align-items: center; gap: 8px; font-size: 0.9em; margin: 2px 0;}
.ipa-part-name {width: 46%;} .ipa-part-value {width: 3em; text-align: right; font-variant-numeric: tabular-nums;}
.ipa-note {font-size: 0.85em; color: var(--body-text-color-subdued); margin-top: 6px;}
.ipa-backend {color: #b45309;}
.ipa-train {padding: 10px 12px; border: 1px solid var(--border-color-primary); border-radius: 8px;}
.ipa-train-head {display: flex; gap: 12px; align-items: baseline;}
.ipa-train.done .ipa-bar > div {background: #16a34a;} .ipa-train.failed {border-color: #dc2626;}
.ipa-error {color: #b91c1c; margin-top: 6px;}
.ipa-spread {color: var(--body-text-color-subdued); font-size: 0.95em; white-space: nowrap;}
/* The two columns sit side by side on a wide screen and stack on a narrow one, at one width that the words
   "left"/"right" ("top"/"bottom" when stacked) follow: views.side and views.STACKED_BELOW_PX. */
.ipa-narrow {display: none;}
@media (max-width: STACKED_MAX_PX) {
  .ipa-columns {flex-direction: column !important;}
  .ipa-wide {display: none;} .ipa-narrow {display: inline;}
}
/* Nine tabs in one row on a 1366-pixel laptop screen (Gradio's padding would push the last onto a second row). */
button[role="tab"] {padding-left: 0.65rem !important; padding-right: 0.65rem !important;}
/* Table headers (the compare panel's methods) wrap between words, never inside one. */
.ipa-table th, .ipa-table th * {word-break: normal !important; overflow-wrap: normal !important; hyphens: none;}
/* The token view reads as running text: no gaps between tokens (their own leading spaces separate words). */
.ipa-tokens .score-token {padding: 1px 0 !important; margin: 0 !important; border-radius: 0 !important;}
""".replace("STACKED_MAX_PX", f"{views.STACKED_BELOW_PX - 1}px")
HEADER = f"""# IPA Playground: steering a language model at decoding time
A small **policy adapter**, trained with reinforcement learning to raise a reward, steers a frozen language model
while it writes: at every token the adapter's preferences are multiplied with the base model's
([Inference-Time Policy Adapters](https://arxiv.org/abs/2305.15065), Lu et al. 2023). The base model's weights never
change; **alpha** sets how hard the adapter pulls. Each tab continues the same input twice, with the base alone ({views.side("left")})
and with base + adapter ({views.side("right")}), and scores both with the reward the adapter was trained for."""


def alpha_info(service: Playground) -> str:
    """What alpha does with this page's adapters. On the base's own weights, under the residual combination,
    log_softmax(base) + alpha · (tuned − base) is at alpha 1 the LoRA-tuned model's own log-softmax (README, "The
    method in one screen"): the slider is then a knob between the base and the fine-tuned model."""
    if service.adapter_host is service.base:
        return (f"The adapters here are {service.sizes}: at alpha 1 the right column samples exactly the "
                "RL-fine-tuned model, and other alphas p_base^(1 − alpha) · p_tuned^alpha. A light adapter "
                "(ipa train --adapter-init light) is a smaller model that steers the base instead.")
    return (f"The adapters here are {service.sizes}: alpha weighs what the adapter learned against the base, "
            "p_base · (p_adapter / p_adapter's initial model)^alpha.")


def launch_options(mcp: bool = False) -> dict:
    """What Gradio 6 takes at launch() rather than in Blocks(): the theme, the page's CSS, and whether the page's
    actions are also served as MCP tools (--mcp)."""
    return {"theme": THEME, "css": CSS, "mcp_server": mcp}


def keep_in_view_js(button_id: str, outputs_id: str, field_ids: list[str] = ()) -> str:
    """A click's JavaScript: when the output columns are not in sight (on a 1366 x 768 screen the inputs, demo
    inputs and card fill the first screen), scroll the Generate button to the top, the columns under it, so that
    the text is seen as it streams. Nothing moves when they are already in sight, nor when a box is empty (its hint
    shows beside it: the event's validator)."""
    fields = ", ".join(f'"{i}"' for i in field_ids)
    return f"""() => {{
  const outputs = document.getElementById("{outputs_id}"), button = document.getElementById("{button_id}");
  if (!outputs || !button) return;
  const empty = [{fields}].some((id) => {{
    const box = document.querySelector(`#${{id}} textarea, #${{id}} input`);
    return box && !box.value.trim();
  }});
  if (empty) return;
  const top = outputs.getBoundingClientRect().top;
  if (top < 0 || top + 160 > window.innerHeight) button.scrollIntoView({{block: "start", behavior: "smooth"}});
}}"""


def queue_options(concurrency: int, queue_size: int) -> dict:
    return {"default_concurrency_limit": concurrency, "max_size": queue_size}


# --- a task tab ---------------------------------------------------------------------------------------------


def adapter_choices(service: Playground, task: str) -> list[tuple[str, str]]:
    entries = service.adapters_for(task)
    return [("No adapter (base only)", NO_ADAPTER)] + [
        (f"{e.name} ({e.source}, {e.card.steps} step{'' if e.card.steps == 1 else 's'})", e.name) for e in entries]


def second_adapter_choices(service: Playground) -> list[tuple[str, str]]:
    return [("No second adapter", NO_ADAPTER)] + all_adapter_choices(service)


@dataclasses.dataclass
class AdapterMenus:
    """Every adapter dropdown of the page, so that training, uploading and deleting refresh them all: each task tab's
    adapter (its task's adapters) and second adapter (any adapter), and the menus of any adapter ("Try your
    adapters", "Your adapters"), each with the function that lists its choices."""

    by_task: dict[str, gr.Dropdown] = dataclasses.field(default_factory=dict)
    second: list[gr.Dropdown] = dataclasses.field(default_factory=list)
    any_adapter: list[tuple[gr.Dropdown, Callable[[Playground], list]]] = dataclasses.field(default_factory=list)
    poll: tuple | None = None
    """The training tab's poll (function, state, outputs): build_ui wires it to the timer once every menu exists."""

    @property
    def components(self) -> list[gr.Dropdown]:
        return [*self.by_task.values(), *self.second, *(menu for menu, _ in self.any_adapter)]

    def updates(self, service: Playground) -> list[dict]:
        seconds = second_adapter_choices(service)
        return ([gr.update(choices=adapter_choices(service, name)) for name in self.by_task]
                + [gr.update(choices=seconds) for _ in self.second]
                + [gr.update(choices=choices(service)) for _, choices in self.any_adapter])


def _example_rows(task: Task) -> list[list[str]]:
    return [[", ".join(d[f.name]) if isinstance(d[f.name], (list, tuple)) else d[f.name] for f in task.fields]
            for d in task.demos]


SETTING_WIDGETS = (("n", "Samples per column", 1), ("max_new_tokens", "Max new tokens", 1),
                   ("temperature", "Temperature (0 = greedy)", 0.05), ("top_p", "Top-p", 0.05))
"""A task tab's Settings fields under alpha, each (name, label, slider step); the seed follows them."""


def on_adapter_change(store: AdapterStore, task: Task, name: str, name_2: str | None = None):
    """A newly picked adapter: its card, its alpha, the right column's title."""
    entry = store.adapters.get(name)
    second = name_2 if name_2 in store.adapters else None
    return (views.card_markdown(entry, task), gr.update(value=entry.card.alpha) if entry else gr.skip(),
            gr.update(label=views.tailored_label(entry.name if entry else None, second)))


def on_second_change(store: AdapterStore, name: str, name_2: str | None):
    entry = store.adapters.get(name)
    second = name_2 if name_2 in store.adapters else None
    return gr.update(label=views.tailored_label(entry.name if entry else None, second))


def generate(service: Playground, task: Task, names: list[str], *values):
    """A task's Generate: `values` in the order of `names` (the task's fields, then the tab's parameters)."""
    values = dict(zip(names, values))
    given = {f.name: values[f.name] for f in task.fields}
    name, name_2 = values["adapter"], values["adapter_2"]
    adapter_name = None if name in (None, "", NO_ADAPTER) else name
    more = [] if name_2 in (None, "", NO_ADAPTER) else [(name_2, values["alpha_2"])]

    def updates():
        settings = Settings(**{key: values[key] for key in ("alpha", *(field for field, _, _ in SETTING_WIDGETS), "seed")})
        for update in service.generation.generate(task.name, given, settings, adapter_name, more, inspect=True):
            entry = service.store.adapters.get(update.adapter) if update.adapter else None
            yield *views.generation_outputs(update, task, entry), inspector_ui.kept(update)

    yield from as_page_errors(updates, "Generation")


def missing_inputs(task: Task, *values):
    """An empty box gets a hint beside it and nothing runs (the API, which skips this, gets the service's error)."""
    return [gr.validate(not f.missing(v), f"The {f.label.lower()} is missing: type it here, or click a demo input below.")
            for f, v in zip(task.fields, values)] + [gr.validate(True, "")] * (len(values) - len(task.fields))


def task_tab(service: Playground, task: Task, shares: dict | None = None,
             menus: AdapterMenus | None = None, classroom: Classroom | None = None) -> None:
    """The widgets of one task and its Generate event; its adapter dropdowns go into `menus` (the training and
    adapters tabs refresh them).
    `shares` receives the tab's share panel (link and JSON under the result), which page links restore; with a
    classroom, the tab gets its blind vote panel (app/class_ui.py)."""
    default = service.default_adapter(task.name)
    entry = service.adapters.get(default) if default else None
    settings = Settings.for_task(task.name)
    gr.Markdown(f"### {task.title}\n{task.description} &nbsp; Reward: `{task.reward}` (0 to 1, higher is better).  \n"
                f"<small>{views.e(task.reward_note)}</small>", elem_id=f"{task.name}-reward-note")
    with gr.Row():
        with gr.Column(scale=3):
            fields = [gr.Textbox(label=f.label, placeholder=f.placeholder, lines=f.lines,
                                 max_length=service.config.max_input_chars, elem_id=f"{task.name}-{f.name}")
                      for f in task.fields]
            # right under the boxes: in view on a laptop screen, and next to the demo inputs a click fills in
            button = gr.Button("Generate", variant="primary", elem_id=f"{task.name}-generate")
            gr.Examples(_example_rows(task), inputs=fields, label="Demo inputs (click one)", examples_per_page=6)
        with gr.Column(scale=2):
            adapter = gr.Dropdown(adapter_choices(service, task.name), value=default or NO_ADAPTER, label="Adapter",
                                  allow_custom_value=True,  # the API may name an adapter trained after this page was built
                                  elem_id=f"{task.name}-adapter")
            card = gr.Markdown(views.card_markdown(entry, task))
            with gr.Accordion("Settings", open=False, elem_id=f"{task.name}-settings"):
                # each a Settings field: its range from Settings.LIMITS (the service checks them), its info its docstring
                alpha = checked_by_service(field_widget(Settings, "alpha", entry.card.alpha if entry else 1.0,
                                                        "Alpha: adapter strength (0 = base only)", step=0.1,
                                                        note=alpha_info(service), elem_id=f"{task.name}-alpha"))
                # composed adapters: any adapter of any task or objective, scored by its own reward too
                adapter_2 = gr.Dropdown(second_adapter_choices(service), value=NO_ADAPTER,
                                        label="Second adapter (composed with the first)", allow_custom_value=True,
                                        elem_id=f"{task.name}-adapter-2")
                alpha_2 = checked_by_service(field_widget(Settings, "alpha", 0.5, "Alpha of the second adapter", step=0.1,
                                                          elem_id=f"{task.name}-alpha-2"))
                settings_widgets = {name: checked_by_service(field_widget(Settings, name, getattr(settings, name), label,
                                                                          step=step, elem_id=f"{task.name}-{name.replace('_', '-')}"))
                                    for name, label, step in SETTING_WIDGETS}
                seed = checked_by_service(field_widget(Settings, "seed", 0, "Seed (-1 = random); the same seed repeats a result",
                                                       info=share_ui.generation_docs()["seed"], elem_id=f"{task.name}-seed"))
    notice = gr.Markdown(label="notice", elem_id=f"{task.name}-notice")
    with gr.Row(equal_height=False, elem_classes="ipa-columns", elem_id=f"{task.name}-outputs"):
        with gr.Column(min_width=0):  # side by side until the CSS stacks them (views.STACKED_BELOW_PX)
            base_text = gr.Textbox(label="Base model", lines=4, interactive=False, elem_id=f"{task.name}-base")
            base_reward = gr.HTML(views.EMPTY, label="base_reward", elem_id=f"{task.name}-base-reward")
        with gr.Column(min_width=0):
            tailored_text = gr.Textbox(label=views.tailored_label(default), lines=4,
                                       interactive=False, elem_id=f"{task.name}-tailored")
            tailored_reward = gr.HTML(views.EMPTY, label="tailored_reward", elem_id=f"{task.name}-tailored-reward")
    token_view = gr.HighlightedText(label="Where the adapter steered: tailored text, sample 1", show_legend=False,
                                    show_inline_category=False, elem_id=f"{task.name}-tokens", elem_classes="ipa-tokens")
    steering = gr.Markdown(views.TOKEN_LEGEND, label="steering")
    inspector = inspector_ui.inspector_panel(service, task, token_view)
    with gr.Accordion("The result as data (what the API returns)", open=False):
        data = gr.JSON(label="Result")
    share = share_ui.share_panel(task)
    if classroom is not None:
        class_ui.task_vote_panel(classroom, task, fields, adapter, alpha)
    # the Generate API's parameters after the task's fields, in order: written once, here
    parameters = {"adapter": adapter, "alpha": alpha, **settings_widgets, "seed": seed, "adapter_2": adapter_2,
                  "alpha_2": alpha_2}
    research_panels(service, task, fields, adapter, {name: parameters[name] for name in
                                                     ("alpha", "max_new_tokens", "temperature", "top_p", "seed")})

    adapter_changed = bound(on_adapter_change, service.store, task)
    # .input, a user's pick: a share link's restored adapter shows its card too, but keeps the link's alpha
    adapter.input(adapter_changed, [adapter, adapter_2], [card, alpha, tailored_text], show_progress="hidden",
                  api_visibility="private")
    adapter_2.input(bound(on_second_change, service.store), [adapter, adapter_2], tailored_text, show_progress="hidden",
                    api_visibility="private")

    names = [f.name for f in task.fields] + list(parameters)
    inputs = [*fields, *parameters.values()]

    # first: the page runs a button's listeners in turn, each to its end (a streamed Generate ends when it is scored)
    button.click(None, js=keep_in_view_js(f"{task.name}-generate", f"{task.name}-outputs",
                                          [f"{task.name}-{f.name}" for f in task.fields]))
    outputs = [base_text, tailored_text, base_reward, tailored_reward, token_view, steering, notice, data, inspector.state]
    on_generate = share_ui.describe_generate(with_parameters(bound(generate, service, task, names), names), task)
    generated = button.click(on_generate, inputs, outputs, api_name=f"generate_{task.name}", concurrency_id="generate",
                             show_progress="minimal", validator=bound(missing_inputs, task))
    share_ui.mcp_tool(f"generate_{task.name}", share_ui.data_output(on_generate, outputs, data), on_generate,
                      dict(zip(names, inputs)), share_ui.RESULT_JSON, concurrency_id="generate")
    inspector.follow(generated)
    share_ui.wire_result(share, generated, dict(zip(names, inputs)), data, notice,
                         adapter_change=(adapter_changed, [card, alpha, tailored_text]))
    if shares is not None:
        shares[task.name] = share
    if menus is not None:
        menus.by_task[task.name] = adapter
        menus.second.append(adapter_2)


# --- the training tab -------------------------------------------------------------------------------------------

RUN_NUMBERS = {"amount": float, "lr": float, "alpha": float, "batch_size": int, "group_size": int, "max_new_tokens": int,
               "eval_prompts": int}
"""The training widgets' numbers and their kinds (an empty number box sends None: 0, which TrainRequest.check refuses
where 0 is out of range)."""


def train_request(values: Mapping, **objective) -> TrainRequest:
    """The TrainRequest of the training widgets' values, by name (task, algo, budget and RUN_NUMBERS; other names are
    not read); objective: TrainRequest's objective, prompts_text and prompts_file."""
    numbers = {name: kind(values[name] or 0) for name, kind in RUN_NUMBERS.items()}
    return TrainRequest(task=values["task"], algo=values["algo"], budget=values["budget"], **numbers, **objective)


def objective_request(values: Mapping) -> TrainRequest:
    """The objective that the builder's rows make (name, prompts, block_i, weight_i, params_i; task is not used: the
    objective replaces it), trained as train_request reads the other values, with the pasted prompt_lines and the
    uploaded prompts_file if any."""
    rows = [tuple(values[f"{k}_{i}"] for k in ("block", "weight", "params")) for i in range(1, PAGE_BLOCKS + 1)]
    try:
        objective = page_objective(values["name"], values["prompts"], rows).to_dict()
    except USER_ERRORS as err:
        raise user_error(err) from None
    return train_request(values, objective=objective, prompts_text=values["prompt_lines"] or "",
                         prompts_file=values.get("prompts_file") or "")



def run_owner(classroom: Classroom | None, request: gr.Request | None) -> str | None:
    """Who a training run belongs to: the person the session joined the class as (classroom.owner), else the
    session."""
    session = request.session_hash if request else None
    return classroom.owner(session) if classroom is not None and session else session


def started(training: TrainingService, classroom: Classroom | None, train: TrainRequest, owner: str | None,
            request: gr.Request | None) -> dict:
    """The run queued (its first snapshot). owner: the person (or page session) that may stop it; None for an MCP
    call, which has no session (nobody stops its run: it ends with its budget)."""
    try:
        snapshot = training.start(train, owner=owner, local=local_browser(request))
    except USER_ERRORS as err:
        raise user_error(err) from None
    if classroom is not None and owner is not None and request is not None:
        classroom.record_run(request.session_hash, snapshot["adapter"])
    return snapshot


def shown(snapshot: dict) -> str:
    when = f"queued, {snapshot['position']} ahead of it" if snapshot["state"] == "queued" else "started"
    gr.Info(f"Training {when}: the adapter will be called “{views.e(snapshot['adapter'])}”.")
    return views.training_status_html(snapshot)


def start_run(training: TrainingService, classroom: Classroom | None, task: str, algo: str, budget: str, amount: float,
              lr: float, alpha: float, batch_size: int, group_size: int, max_new_tokens: int, eval_prompts: int,
              request: gr.Request):
    values = locals()  # the parameters by name (train_request reads the widgets' names only)
    return shown(started(training, classroom, train_request(values), run_owner(classroom, request), request))


def start_objective_run(training: TrainingService, classroom: Classroom | None, name: str, prompts: str, block_1: str,
                        weight_1: float, params_1: str, block_2: str, weight_2: float, params_2: str, block_3: str,
                        weight_3: float, params_3: str, task: str, algo: str, budget: str, amount: float, lr: float,
                        alpha: float, batch_size: int, group_size: int, max_new_tokens: int, eval_prompts: int,
                        prompt_lines: str, request: gr.Request, prompts_file: str | None = None):
    """Train an adapter for the objective these blocks make (task is not used: the objective replaces it)."""
    values = locals()  # the parameters by name (objective_request reads the widgets' names only)
    return shown(started(training, classroom, objective_request(values), run_owner(classroom, request), request))


def stop_run(training: TrainingService, classroom: Classroom | None, request: gr.Request):
    try:
        snapshot = training.stop(owner=run_owner(classroom, request))
    except USER_ERRORS as err:
        raise user_error(err) from None
    return views.training_status_html(snapshot)


def poll(service: Playground, menus: AdapterMenus, classroom: Classroom | None, state: dict, request: gr.Request):
    """The training tab's tick: the run's status, curves and samples, and every adapter menu, each only when it
    changed (it runs every 1.5 s in every open page)."""
    snapshot = service.training.status(owner=run_owner(classroom, request))
    state = dict(state)
    status_key = (snapshot["state"], snapshot["phase"], snapshot.get("step"), int(snapshot.get("wall_seconds", 0)))
    history_key = len(snapshot["history"]) + (1000000 if snapshot["state"] != "running" else 0)
    samples_key = (snapshot["samples"][0]["step"], len(snapshot["samples"])) if snapshot["samples"] else None
    outputs = [gr.skip()] * 4
    if status_key != state["status"]:
        outputs[0] = views.training_status_html(snapshot)
    if history_key != state["history"]:
        curves = views.reward_curves(snapshot)
        outputs[1], outputs[2] = (curves if len(curves) else None), views.curve_frame(snapshot, "kl")
    if samples_key != state["samples"]:
        outputs[3] = views.samples_frame(snapshot)
    version = service.store.adapters_version
    choices = menus.updates(service) if version != state["version"] else [gr.skip()] * len(menus.components)
    state.update(version=version, status=status_key, history=history_key, samples=samples_key)
    return *outputs, state, *choices


def train_status(training: TrainingService, classroom: Classroom | None, request: gr.Request) -> dict:
    """This session's latest training run (else the running one): state, phase, position in the queue, step,
    progress, reward/KL history, samples, errors."""
    return training.status(owner=run_owner(classroom, request))


def adapter_names(store: AdapterStore, task: str) -> list[str]:
    """The names of the adapters available for a task (shipped and trained here)."""
    return [e.name for e in store.adapters_for(task)]


def training_tab(service: Playground, menus: AdapterMenus, classroom: Classroom | None = None) -> None:
    """The training tab. Its poll (menus.poll) is wired by build_ui to a timer outside the tabs (a Timer inside a tab
    ticks only once the tab is opened); its ticks also refresh every adapter menu of the page. A run belongs to the
    person the session joined the class as (classroom.owner), else to the session."""
    training = service.training
    d = training.defaults()
    limits = training.limits
    if service.config.training != "open":
        gr.Markdown("**Training is switched off on this playground.**" if service.config.training == "off" else
                    "**On this playground only a browser on the machine it runs on may train adapters.**",
                    elem_id="training-access")
    gr.Markdown("Train a new adapter with the same RL loop that trained the shipped ones. It trains on a separate copy "
                "of the model, so the other tabs keep working; when it is done it appears in its task's adapter list.")
    gr.Markdown(views.machine_notice(service.has_gpu, service.machine()), elem_id="machine-notice")
    with gr.Row():
        task = gr.Dropdown([(t.title, name) for name, t in TASKS.items()], value=d.task, label="Task")
        algo = gr.Radio([("Policy gradient (pg)", "pg"), ("Quark (the paper's)", "quark")], value=d.algo, label="Algorithm")
        budget = gr.Radio([("Minutes", "minutes"), ("Steps", "steps")], value=d.budget, label="Budget in", elem_id="train-budget")
        amount = gr.Number(d.amount, minimum=0, label=f"Budget (minutes, up to {limits.max_minutes:g}; or steps, up to {limits.max_steps})",
                           elem_id="train-amount")

    def page_field(name: str, label: str, **options) -> gr.Slider | gr.Number:
        """The widget of a TrainConfig field the page sets: its range PAGE_FIELDS' under this page's limits (which
        TrainRequest.check applies), its info the field's docstring."""
        return field_widget(TrainRequest, name, getattr(d, name), label, PAGE_FIELDS[name].bounds(limits), **options)

    with gr.Row():
        lr = page_field("lr", "Learning rate")
        alpha = page_field("alpha", "Alpha during training", step=0.1)
    with gr.Accordion("Advanced", open=False):
        with gr.Row():
            batch = page_field("batch_size", "Samples per step (batch)", elem_id="train-batch")
            group = page_field("group_size", "Samples per prompt (pg group)", elem_id="train-group")
            tokens = page_field("max_new_tokens", "Tokens per sample (0 = task default)", elem_id="train-tokens")
            evals = page_field("eval_prompts", "Held-back prompts for before/after", elem_id="train-evals")
    with gr.Row():
        start = gr.Button("Start training", variant="primary", elem_id="train-start")
        stop = gr.Button("Stop (keeps what it learned)", variant="stop", elem_id="train-stop")
    with gr.Accordion("… or your own objective instead of a task", open=False, elem_id="objective-builder"):
        gr.Markdown("Name it, choose up to three reward blocks with weights (combined by a weighted geometric mean: a "
                    "block scoring 0 makes the reward 0) and a prompt set. It trains with the budget and settings above; "
                    "the adapter keeps the objective and the *Try your adapters* tab scores with it.")
        with gr.Row():
            objective_name = gr.Textbox("cheerful-ocean", label="Name (letters, digits, - _ .)", max_lines=1,
                                        elem_id="objective-name")
            prompts = gr.Dropdown([(p.title, name) for name, p in PROMPT_SETS.items()], value=DEFAULT_PROMPT_SET,
                                  label="Prompts", elem_id="objective-prompts")
        block_names = [("(no block)", NO_BLOCK)] + [(name, name) for name in block_rewards()]
        starting = [("sentiment", ""), ("topic", '{"topic": "the ocean and the sea"}')]
        block_widgets = []
        for i in range(PAGE_BLOCKS):
            reward, params = starting[i] if i < len(starting) else (NO_BLOCK, "")
            with gr.Row():
                block_widgets += [
                    gr.Dropdown(block_names, value=reward, label=f"Block {i + 1}", elem_id=f"objective-block-{i + 1}",
                                allow_custom_value=True),  # any name reaches page_objective, whose error lists the valid ones
                    gr.Number(1.0, minimum=0, label="Weight", elem_id=f"objective-weight-{i + 1}"),
                    gr.Textbox(params, label="Parameters (JSON object; empty for defaults)", max_lines=1,
                               elem_id=f"objective-params-{i + 1}")]
        with gr.Row():
            pasted = gr.Textbox("", lines=3, max_lines=8, elem_id="objective-pasted", scale=2,
                                label=f"… or paste your own prompts, one a line (at least {MIN_FILE_PROMPTS}, at most "
                                      f"{MAX_PROMPT_LINES:,}; they replace the prompt set; texts to continue)")
            prompts_upload = gr.File(None, file_types=list(PROMPT_FILE_TYPES), type="filepath", elem_id="objective-prompts-file",
                                     label=f"… or upload them: .txt, one a line, or .jsonl rows such as {{\"text\": ...}} "
                                           f"(up to {MAX_PROMPTS_KB} KB)")
        with gr.Accordion("The blocks and their parameters", open=False):
            gr.Markdown(views.blocks_markdown(block_rewards()))
        start_objective = gr.Button("Train this objective", variant="primary", elem_id="objective-start")
    status = gr.HTML(views.training_status_html(training.status()), label="training_status", elem_id="train-status")
    with gr.Row():
        # None, not an empty frame: Gradio 6.31 keeps the first frame's (empty) list of series for its colours,
        # and would draw the curves that come later without any
        reward_plot = gr.LinePlot(None, x="step", y="value", color="series",
                                  title="Reward per step (each batch, moving mean, held-back)",
                                  height=260, y_lim=[0, 1])
        kl_plot = gr.LinePlot(views.curve_frame({}, "kl"), x="step", y="kl", title="KL(tailored ‖ base) per token", height=260)
    gr.Markdown("<small>Sample generations show training prompts as they are: for detoxification they come from "
                "RealToxicityPrompts and can be offensive.</small>")
    samples = gr.Dataframe(views.samples_frame({}), label="Sample generations during training (newest first)",
                           wrap=True, interactive=False, column_widths=["8%", "8%", "34%", "50%"])
    seen = gr.State({"version": service.adapters_version, "status": None, "history": -1, "samples": None})

    on_start = bound(start_run, training, classroom)
    on_objective = bound(start_objective_run, training, classroom)
    on_stop = bound(stop_run, training, classroom)
    # what the API page and MCP clients read for each action (the parameters' lines come from TrainRequest's fields)
    share_ui.document(on_start, share_ui.training_docs(PAGE_BLOCKS), "Start training an adapter for a task (queued when "
                      "another run trains); train_status follows it.", returns="The run's status as HTML.")
    share_ui.document(on_objective, share_ui.training_docs(PAGE_BLOCKS), returns="The run's status as HTML.")
    share_ui.document(on_stop, {}, "Stop this session's training run: a waiting one leaves the queue, a running one "
                      "stops after its step and keeps what it learned.")
    # wired once the page is built (build_ui): the menus of the tabs after this one refresh too
    menus.poll = (bound(poll, service, menus, classroom), seen, [status, reward_plot, kl_plot, samples, seen])
    run_widgets = {"task": task, "algo": algo, "budget": budget, "amount": amount, "lr": lr, "alpha": alpha,
                   "batch_size": batch, "group_size": group, "max_new_tokens": tokens, "eval_prompts": evals}
    block_names = [f"{k}_{i}" for i in range(1, PAGE_BLOCKS + 1) for k in ("block", "weight", "params")]
    objective_widgets = {"name": objective_name, "prompts": prompts, **dict(zip(block_names, block_widgets)), **run_widgets,
                         "prompt_lines": pasted}
    start.click(on_start, list(run_widgets.values()), status, api_name="train_start", concurrency_limit=None)
    stop.click(on_stop, None, status, api_name="train_stop", concurrency_limit=None)
    start_objective.click(on_objective, [*objective_widgets.values(), prompts_upload], status,
                          api_name="train_objective", concurrency_limit=None)
    status_of = bound(train_status, training, classroom)
    adapters = share_ui.document(bound(adapter_names, service.store), {"task": f"One of the tasks: {', '.join(TASKS)}."})
    gr.api(status_of, api_name="train_status", concurrency_limit=None)
    gr.api(adapters, api_name="adapters", concurrency_limit=None)

    # MCP tools: the same actions answering JSON; a run started by MCP has no session (no owner; it ends by its budget),
    # and train_status without a session follows the running run, else the last. An uploaded prompts file is the
    # page's: an MCP client pastes its prompts as prompt_lines.
    share_ui.mcp_tool("train_start", lambda *values, request=None: started(
                          training, classroom, train_request(dict(zip(run_widgets, values))), None, request),
                      on_start, run_widgets, share_ui.TRAINING_JSON, concurrency_limit=None)
    share_ui.mcp_tool("train_objective", lambda *values, request=None: started(
                          training, classroom, objective_request(dict(zip(objective_widgets, values))), None, request),
                      on_objective, objective_widgets, share_ui.TRAINING_JSON, concurrency_limit=None)
    share_ui.mcp_tool("train_status", lambda request=None: training.status(), status_of, {},
                      share_ui.TRAINING_JSON, "The training run in progress, else the last one (an MCP call has no "
                      "session of its own): state, phase, step, progress, reward/KL history, samples, errors.",
                      concurrency_limit=None)
    share_ui.mcp_tool("adapters", lambda task, request=None: {"task": task, "adapters": adapters(task)}, adapters,
                      {"task": str}, "A JSON object: the task, and adapters, the names of its adapters.",
                      concurrency_limit=None)


# --- your adapters: download, delete, upload -------------------------------------------------------------------


def all_adapter_choices(service: Playground) -> list[tuple[str, str]]:
    return [(f"{e.name} ({e.source}, task {e.card.task})", e.name) for e in list(service.adapters.values())]


def refreshed(service: Playground, menus: AdapterMenus, chosen: gr.Dropdown, message: str, value=None) -> tuple:
    """The message, and every adapter menu of the page afresh (the tab's own menu set to `value`)."""
    updates = menus.updates(service)
    updates[menus.components.index(chosen)] = gr.update(choices=all_adapter_choices(service), value=value)
    return message, *updates


def download_adapter(store: AdapterStore, name: str) -> str:
    """The chosen adapter as a zip file: its safetensors and card."""
    try:
        return str(store.adapter_zip(name, Path(tempfile.mkdtemp(prefix="ipa-zip-"))))
    except USER_ERRORS as err:
        raise user_error(err) from None


def delete_adapter(service: Playground, menus: AdapterMenus, chosen: gr.Dropdown, name: str, request: gr.Request):
    try:
        service.store.delete_adapter(name, local=local_browser(request))
    except USER_ERRORS as err:
        raise user_error(err) from None
    return refreshed(service, menus, chosen, f"Deleted “{views.e(name)}”.")


def upload_adapter(service: Playground, menus: AdapterMenus, chosen: gr.Dropdown, path: str | None, request: gr.Request):
    if not path:
        raise user_error(ServiceError("Choose an adapter zip to upload."))
    try:
        entry = service.store.upload_adapter(path, local=local_browser(request))
    except USER_ERRORS as err:
        raise user_error(err) from None
    where = ("the *Try your adapters* tab, scored with its own objective" if entry.card.objective
             else "that task's adapter list and the *Try your adapters* tab")
    return refreshed(service, menus, chosen, f"Uploaded as “{views.e(entry.name)}” (task {views.e(entry.card.task)}): it "
                     f"is in {where} now.", entry.name)


def adapters_tab(service: Playground, menus: AdapterMenus) -> None:
    """Download any adapter as a zip (its safetensors and card), delete those trained or uploaded here, upload a
    zip made by this project (checked: app/adapter_files.py)."""
    gr.Markdown("Every adapter on this playground, to take home as a zip (its weights as safetensors and its card), "
                "and a place to bring one back: a zip made by this project's *Download*, for the same base model "
                f"(JSON and safetensors only, up to {adapter_files.MAX_ZIP_MB} MB). Adapters trained or uploaded here "
                "can be deleted; the shipped ones stay.")
    with gr.Row():
        chosen = gr.Dropdown(all_adapter_choices(service), label="Adapter", allow_custom_value=True,
                             elem_id="adapters-chosen")
        with gr.Column():
            download = gr.Button("Download (zip)", elem_id="adapters-download")
            delete = gr.Button("Delete (trained or uploaded here)", variant="stop", elem_id="adapters-delete")
    zipped = gr.File(label="The adapter's zip", interactive=False, elem_id="adapters-zip")
    upload = gr.File(label="Upload an adapter zip", file_types=[".zip"], type="filepath", elem_id="adapters-upload")
    result = gr.Markdown(elem_id="adapters-result")

    name_doc = {"name": "The adapter's name (the adapters endpoint lists them by task)."}
    on_download = share_ui.document(bound(download_adapter, service.store), name_doc)
    on_delete = share_ui.document(bound(delete_adapter, service, menus, chosen), name_doc,
                                  "Delete an adapter trained or uploaded here (never a shipped one).")
    on_upload = share_ui.document(bound(upload_adapter, service, menus, chosen),
                                  {"path": "A zip made by this playground's adapter_download (JSON and safetensors)."},
                                  "Upload an adapter zip; it is checked, then listed under a new name for its task.")
    menus.any_adapter.append((chosen, all_adapter_choices))
    outputs = [result, *menus.components]
    download.click(on_download, chosen, zipped, api_name="adapter_download")
    delete.click(on_delete, chosen, outputs, api_name="adapter_delete")
    upload.upload(on_upload, upload, outputs, api_name="adapter_upload")


# --- try your adapters --------------------------------------------------------------------------------------------


def try_choices(service: Playground) -> list[tuple[str, str]]:
    def trained_for(card) -> str:
        objective = getattr(card, "objective", None)
        return f"objective {objective.get('name')}" if objective else f"task {card.task}"

    return [(f"{e.name} ({e.source}; {trained_for(e.card)})", e.name) for e in list(service.adapters.values())]


def try_adapter(service: Playground, adapter: str, text: str, alpha: float, n: int, max_new_tokens: int, seed: int):
    def updates():
        definition = service.store.adapter_task(adapter)
        settings = Settings(**{**definition.decode, "alpha": alpha, "n": n, "max_new_tokens": max_new_tokens, "seed": seed})
        for update in service.generation.try_adapter(adapter, text, settings):
            out = views.generation_outputs(update, definition, service.store.adapters.get(adapter))
            yield out[0], out[1], out[2], out[3], out[6], out[7]

    yield from as_page_errors(updates, "Generation")


def trial_defaults(service: Playground, adapter: str):
    """What shows a picked adapter's effect: a text like those it trained on, its strength and length."""
    if adapter not in service.store.adapters:
        return [gr.skip()] * 4
    d = service.generation.trial_defaults(adapter)
    return d["text"], d["alpha"], d["n"], d["max_new_tokens"]


def missing_text(adapter, text, *rest):
    return [gr.validate(adapter not in (None, ""), "Pick an adapter first."),
            gr.validate(not InputField.missing(text), "Type a text here first.")] + [gr.validate(True, "")] * len(rest)


def try_tab(service: Playground, classroom: Classroom | None = None, menus: AdapterMenus | None = None) -> gr.Dropdown:
    """Any adapter (shipped, trained here, uploaded; a task's or an objective's) on a text of one's own: base and
    tailored side by side, scored with what the adapter was trained for; with a classroom, a blind vote of it against
    the base or another adapter."""
    gr.Markdown("Pick any adapter, type a text: the base model and base + adapter continue it side by side, both "
                "scored as the adapter was trained: its task's reward, or its own objective block by block.")
    with gr.Row():
        chosen = gr.Dropdown(try_choices(service), label="Adapter", allow_custom_value=True, elem_id="try-adapter")
        text = gr.Textbox("The harbour was quiet that morning", label="Your text (to continue, or your message)", lines=2,
                          elem_id="try-text")
    with gr.Row():
        alpha = gr.Slider(0, 5, value=1.0, step=0.1, label="Alpha (adapter strength)")
        n = gr.Slider(1, Settings.LIMITS["n"][1], value=2, step=1, label="Samples per column")
        max_new = gr.Slider(1, Settings.LIMITS["max_new_tokens"][1], value=24, step=1, label="New tokens")
        seed = gr.Number(0, precision=0, label=f"Seed ({Settings.RANDOM_SEED} = random)")
    button = gr.Button("Generate", variant="primary", elem_id="try-generate")
    notice = gr.Markdown(elem_id="try-notice")
    with gr.Row(equal_height=False, elem_classes="ipa-columns"):
        with gr.Column(min_width=0):
            base_text = gr.Textbox(label="Base model", lines=4, interactive=False, elem_id="try-base")
            base_reward = gr.HTML(views.EMPTY, label="base_reward")
        with gr.Column(min_width=0):
            tailored_text = gr.Textbox(label="Base + adapter", lines=4, interactive=False, elem_id="try-tailored")
            tailored_reward = gr.HTML(views.EMPTY, label="tailored_reward")
    with gr.Accordion("The result as data (what the API returns)", open=False):
        data = gr.JSON(label="Result")

    on_try = share_ui.document(bound(try_adapter, service), {**share_ui.generation_docs(),
                                                              "adapter": "Any adapter's name, a task's or an objective's.",
                                                              "text": "Your text: to continue, or your message."},
                               "Any adapter on a text of one's own: base and base + adapter side by side, scored as the "
                               "adapter was trained (its task's reward or its own objective).")
    # Picking an adapter sets what shows its effect: a text like those it trained on, its strength and length.
    chosen.change(bound(trial_defaults, service), chosen, [text, alpha, n, max_new], queue=False, api_visibility="private")
    outputs = [base_text, tailored_text, base_reward, tailored_reward, notice, data]
    button.click(on_try, [chosen, text, alpha, n, max_new, seed], outputs,
                 api_name="try_adapter", concurrency_id="generate", show_progress="minimal", validator=missing_text)
    # the adapter is required: the page's default, the list's first, may not take a text (CommonGen's takes concepts)
    share_ui.mcp_tool("try_adapter", share_ui.data_output(on_try, outputs, data), on_try,
                      {"adapter": str, "text": text, "alpha": alpha, "n": n, "max_new_tokens": max_new, "seed": seed},
                      share_ui.RESULT_JSON, concurrency_id="generate")
    if classroom is not None:
        opponent = gr.Dropdown(class_ui.opponent_choices(service), value="base", label="… against (blind vote)",
                               allow_custom_value=True, elem_id="try-opponent")
        class_ui.try_vote_panel(classroom, service, chosen, text, alpha, opponent)
        if menus is not None:
            menus.any_adapter.append((opponent, class_ui.opponent_choices))
    return chosen


# --- the page -----------------------------------------------------------------------------------------------------


def status_line(service: Playground) -> str:
    names = ", ".join(e.name for e in service.adapters.values() if e.source == SHIPPED) or "none"
    line = f"Base model: **{service.base_label()}** · running on {service.machine()} · shipped adapters: {names}"
    if not service.adapters:
        line += (f"  \n**No trained adapters were found in {views.text_md(service.public(service.config.adapters_dir))}**: each tab's {views.side('right')} column shows "
                 "the base model until you train one in the *Train an adapter* tab.")
    for problem in service.problems:
        line += f"  \n⚠ Not loaded: {views.text_md(problem)}"  # problems quote the cards they refuse
    return line


def build_ui(service: Playground, classroom: Classroom | None = None) -> gr.Blocks:
    """The whole page for a loaded service; class mode on the service's classroom (app/classroom.py: made here, its
    vote database in the config's class folder, when none is given)."""
    classroom = classroom or Classroom(service.config, service)
    gradio_sessions.install()
    with gr.Blocks(title="IPA Playground", analytics_enabled=False) as demo:
        gr.Markdown(HEADER, elem_id="header")
        gr.Markdown(status_line(service), elem_id="status-line")
        timer = gr.Timer(1.5)
        browser = class_ui.browser_state(classroom)
        menus, shares = AdapterMenus(), {}
        with gr.Tabs(overflow_behavior="wrap") as tabs:  # on a phone the tabs wrap onto more rows: every one in sight
            for name, task in TASKS.items():
                with gr.Tab(task.label or task.title, id=name, elem_id=f"tab-{name}"):
                    task_tab(service, task, shares, menus, classroom)
            with gr.Tab("Train an adapter", id="train", elem_id="tab-train"):
                training_tab(service, menus, classroom)
            with gr.Tab("Try your adapters", id="try", elem_id="tab-try"):
                menus.any_adapter.append((try_tab(service, classroom, menus), try_choices))
            with gr.Tab("Your adapters", id="adapters", elem_id="tab-adapters"):
                adapters_tab(service, menus)
            with gr.Tab("Class", id="class", elem_id="tab-class"):
                class_ui.class_tab(classroom, service, demo, browser)
        class_ui.class_api(classroom, service)
        poll, seen, outputs = menus.poll
        timer.tick(poll, seen, [*outputs, *menus.components], show_progress="hidden", queue=False,
                   api_visibility="private")
        share_ui.restore_on_load(demo, tabs, shares, service)  # a share link's query: its tab, filled, generated
    return demo
