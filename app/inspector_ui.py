"""The token inspector in a task tab: click a token of the token view to see, at that step, the 10 likeliest tokens
under the base, each adapter and the tailored policy, with the KL; pick another token and branch from there.

    >>> inspector = inspector_panel(service, task, token_view)       # doctest: +SKIP
    >>> event = button.click(generate, inputs, [*outputs, inspector.state])  # doctest: +SKIP
    >>> inspector.follow(event)                                       # doctest: +SKIP

In task_tab, under the token view; the Generate handler yields `kept(update)` into the state as its last output.

What the page keeps of the last result (a per-session gr.State, `InspectorState`): the finished Generation without
its inspector data, plus every sample's steps as the engine recorded them (small tensors, about 1.5 kB a step for
both columns; ipa.decoding.inspection.InspectedSteps makes each StepView when the page opens that step). A base
sample's steps get the adapters' view when one of its tokens is first opened (Playground.base_steps replays it,
about as long as one Generate alone), and keep it.

API names: inspect_<task> (column, sample, step: the table of one step) and branch_<task> (column, sample, step,
token_id: both columns regenerated from that step), answered for the session's last Generate.
"""

from __future__ import annotations

import dataclasses
import html
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable

import gradio as gr
import pandas as pd

from ipa.errors import check_number
from ipa.decoding.inspection import TOP_K, StepView
from app import views, widgets
from app.widgets import bound
from app.config import ServiceError
from app.generation import Branched, Generation, TokenStep
from app.service import USER_ERRORS, Playground
from ipa.tasks import Task

COLUMNS = ("tailored", "base")


# --- what the page keeps: the last result, its steps packed ---------------------------------------------------


@dataclass
class InspectorState:
    """The session's last finished Generate: the result (completions without their steps) and each sample's steps."""

    generation: Generation
    steps: dict[str, list[Sequence[StepView]]]
    """Column -> sample -> its steps (ipa.decoding.inspection.InspectedSteps: each StepView made when read)."""


def kept(update: Generation):
    """What the Generate handler leaves in the session's state: nothing until the last update, then that result."""
    if not update.done:
        return gr.skip()
    steps = {column: [c.steps for c in getattr(update, column)] for column in COLUMNS}
    without_steps = {column: [dataclasses.replace(c, steps=[]) for c in getattr(update, column)] for column in COLUMNS}
    return InspectorState(dataclasses.replace(update, **without_steps), steps)


def _last(state: InspectorState | None) -> InspectorState:
    if state is None:
        raise ServiceError("There is no result to inspect yet: press Generate first, then click a token.")
    return state


def chosen_steps(state: InspectorState | None, column: str, sample) -> Sequence[StepView]:
    """The packed steps of one sample (1, 2, ...) of a column, checked: one clear message for a bad column or sample."""
    state = _last(state)
    if column not in COLUMNS:
        raise ServiceError(f"column must be 'base' or 'tailored', got {column!r}.")
    samples = state.steps[column]
    sample = check_number(sample, "sample", 1, len(samples), whole=True, error=ServiceError)
    if not samples[sample - 1]:
        raise ServiceError("This result was generated without the token inspector's data: generate again.")
    return samples[sample - 1]


def step_view(state: InspectorState | None, column: str, sample, step, service: Playground | None = None) -> StepView:
    """One step of one sample, checked. A base sample's steps lack the adapters' view until replayed: with `service`
    they are replayed once (Playground.base_steps) and kept in the state for the next step opened."""
    steps = chosen_steps(state, column, sample)
    if service is not None and getattr(steps, "partial", False):
        steps = state.steps[column][int(sample) - 1] = service.base_steps(state.generation, int(sample))
    step = check_number(step, "step", 0, len(steps) - 1, whole=True, error=ServiceError)
    return steps[step]


# --- what the inspector shows ---------------------------------------------------------------------------------


def shown(text: str) -> str:
    """A token as the table shows it: its leading space and newlines visible.

    >>> shown(" the\\n")
    '␣the↵'
    """
    return text.replace(" ", "␣").replace("\n", "↵")


def inspector_rows(step: StepView) -> pd.DataFrame:
    """The table of one step: rank, then (token, probability) under the base, each adapter and the tailored policy,
    each list most likely first; the chosen token marked ✓."""
    lists = [("base", step.base, lambda t: t.base)]
    lists += [(f"adapter {name}", step.adapters[name], lambda t, name=name: t.adapters[name]) for name in step.adapters]
    lists += [("tailored", step.tailored, lambda t: t.tailored)]
    table = {"#": list(range(1, TOP_K + 1))}
    for title, tokens, prob in lists:
        table[title] = [shown(t.text) + (" ✓" if t.token_id == step.chosen.token_id else "") for t in tokens]
        table[f"p {title}"] = [round(prob(t), 4) for t in tokens]
    return pd.DataFrame(table)


def step_summary(step: StepView, column: str, sample: int, covered: float | None = None) -> str:
    """One line above the table: the chosen token, its probability under each distribution, the KL (and, with a
    black-box base, the share of the base's probability its server's top k held at this step: `covered`)."""
    chosen = step.chosen
    if covered is not None:
        warn = " ⚠ low: the distributions here stand on few tokens" if covered < views.LOW_COVERAGE else ""
        chosen_kl = f" · the server's top k held {covered:.0%} of the base's probability{warn}"
    else:
        chosen_kl = ""
    adapters = "".join(f" · adapter “{views.e(name)}” {p:.3f}" for name, p in chosen.adapters.items())
    kl = (f"KL(tailored ‖ base) {step.kl:.3f} nats" + (" (what the adapter would have moved: this column samples "
                                                       "from the base)" if column == "base" and chosen.adapters else ""))
    return (f"**Step {step.step}** of the {column} text, sample {sample}: chosen “{views.e(shown(chosen.text))}” · "
            f"base p {chosen.base:.3f} → tailored p {chosen.tailored:.3f}{adapters} · drawn with p {chosen.sampled:.3f} "
            f"(after temperature and top-p) · {kl}{chosen_kl}")


def alternative_choices(step: StepView) -> list[tuple[str, int]]:
    """The tokens listed at a step (tailored first, then base, then each adapter), once each, as (label, token id)."""
    seen, choices = set(), []
    for t in [*step.tailored, *step.base, *(t for tops in step.adapters.values() for t in tops)]:
        if t.token_id not in seen:
            seen.add(t.token_id)
            mark = " (chosen)" if t.token_id == step.chosen.token_id else ""
            choices.append((f"“{shown(t.text)}” tailored {t.tailored:.3f}, base {t.base:.3f}{mark}", t.token_id))
    return choices


def token_view(state: InspectorState, column: str, sample: int) -> list[tuple[str, float]]:
    """The token view of one sample, shaded by each step's KL (for the base column: what the adapter would move);
    the end-of-text token is left out, as in the Generate view."""
    completion = getattr(state.generation, column)[sample - 1]
    steps = state.steps[column][sample - 1][:len(completion.tokens)]
    return views.token_highlights([TokenStep(s.chosen.text, s.kl, s.chosen.base, s.chosen.tailored) for s in steps])


def branch_html(branched: Branched, task: Task) -> str:
    """Both columns of a branch: their whole texts (the new token marked) and rewards."""
    def column(name: str) -> str:
        score = branched.scores[name]
        also = (f" · also scored by {views.e(branched.also_scored_by)}: {views.fmt(branched.scores_2[name]['reward'])}"
                if branched.scores_2 else "")
        return (f"<div class='ipa-branch-column'><b>{name}</b>: {html.escape(branched.texts[name])}"
                f"<div class='ipa-note'>{views.e(task.reward)}: <b>{views.fmt(score['reward'])}</b>{also}</div></div>")

    same = branched.token_id == branched.chosen_id
    head = (f"Branched at step {branched.step} of the {branched.column} text, sample {branched.sample}: "
            f"“{views.e(shown(branched.token))}”" + (" (the token that was chosen: the same text comes back)" if same else ""))
    return f"<div class='ipa-reward'><div class='ipa-note'>{head}</div>{column('base')}{column('tailored')}</div>"


# --- the panel --------------------------------------------------------------------------------------------------


@dataclass
class Inspector:
    """What task_tab needs of the panel: the state its Generate event fills (`kept`), and `follow` for that event."""

    state: gr.State
    follow: Callable[[object], None]
    """follow(generate_event): once a Generate is done, the panel shows the new result's step."""


def _answered(answer: Callable, what: str):
    """`answer()`, its errors turned into the page's messages by the page's one wrapper (app.widgets.as_page_errors)."""
    return next(widgets.as_page_errors(lambda: iter([answer()]), what))


# --- the panel's handlers: module level, the service (and task) given by widgets.bound ------------------------


def step_outputs(service: Playground, state, column, sample, step):
    """The panel's four outputs for one step: the sample's token view, the summary line, the table, the alternatives."""
    view = step_view(state, column, sample, step, service)
    choices = alternative_choices(view)
    other = next((value for _, value in choices if value != view.chosen.token_id), view.chosen.token_id)
    masses = getattr(state.generation, column)[int(sample) - 1].base_mass
    covered = masses[view.step] if view.step < len(masses) else None
    return (token_view(state, column, int(sample)), step_summary(view, column, int(sample), covered),
            inspector_rows(view), gr.update(choices=choices, value=other))


def inspect(service: Playground, state: InspectorState | None, column: str, sample: int, step: int):
    """One step of a sample of the session's last result: that sample's token view, a line on the chosen token,
    the table of the likeliest tokens under each distribution, and the alternatives to branch with."""
    return _answered(lambda: step_outputs(service, state, column, sample, step), "Inspecting")


def refresh(service: Playground, state: InspectorState | None, column: str, sample: int, step: int):
    # After Generate: the new result's step, or a hint where that step or sample is not in it (no pop-up).
    try:
        return step_outputs(service, state, column, sample, step)
    except USER_ERRORS:
        return gr.skip(), "Click a token of the text above to inspect it.", None, gr.update(choices=[], value=None)


def branch(service: Playground, task: Task, state: InspectorState | None, column: str, sample: int, step: int,
           token_id: int):
    """Regenerate both columns of the session's last result from a step of one sample, with `token_id` there."""
    result = _answered(lambda: service.branch(_last(state).generation, column, sample, step, token_id), "Branching")
    return branch_html(result, task), dataclasses.asdict(result)


def picked(evt: gr.SelectData):
    return evt.index


def follow_generate(refreshed: Callable, inputs: list, outputs: list, generate_event) -> None:
    """Once a Generate is done, the panel shows the new result's step (`refreshed`: refresh with its service)."""
    generate_event.then(refreshed, inputs, outputs, api_visibility="private", show_progress="hidden")


def inspector_panel(service: Playground, task: Task, tokens: gr.HighlightedText) -> Inspector:
    """The inspector's widgets under a task tab's token view, and their events (inspect_<task>, branch_<task>)."""
    last = gr.State(None)
    with gr.Accordion("Token inspector: click a token above", open=True, elem_id=f"{task.name}-inspector"):
        with gr.Row():
            # sent as they are: the service answers a bad column, sample or step with one message
            column = widgets.checked_by_service(gr.Radio(list(COLUMNS), value="tailored", label="Column",
                                                     elem_id=f"{task.name}-inspect-column"))
            sample = widgets.checked_by_service(gr.Number(1, precision=0, minimum=1, label="Sample",
                                                      elem_id=f"{task.name}-inspect-sample"))
            step = widgets.checked_by_service(gr.Number(0, precision=0, minimum=0, label="Step (0 = the first new token)",
                                                    elem_id=f"{task.name}-inspect-step"))
        summary = gr.Markdown(elem_id=f"{task.name}-inspect-summary")
        table = gr.Dataframe(label=f"The {TOP_K} likeliest tokens at this step", interactive=False, wrap=True,
                             elem_id=f"{task.name}-inspect-table")
        with gr.Row():
            alternative = widgets.checked_by_service(gr.Dropdown([], label="Alternative token", allow_custom_value=True,
                                                             elem_id=f"{task.name}-inspect-token"))
            branch_button = gr.Button("Branch from here", elem_id=f"{task.name}-branch")
        branched = gr.HTML(elem_id=f"{task.name}-branched")
        with gr.Accordion("The branch as data", open=False):
            branched_data = gr.JSON(label="Branch")

    outputs = [tokens, summary, table, alternative]
    tokens.select(picked, None, step, api_visibility="private", queue=False)
    gr.on([step.change, column.change, sample.change], bound(inspect, service), [last, column, sample, step], outputs,
          api_name=f"inspect_{task.name}", show_progress="hidden")
    branch_button.click(bound(branch, service, task), [last, column, sample, step, alternative], [branched, branched_data],
                        api_name=f"branch_{task.name}", concurrency_id="generate", show_progress="minimal")
    follow = bound(follow_generate, bound(refresh, service), [last, column, sample, step], outputs)

    return Inspector(last, follow)
