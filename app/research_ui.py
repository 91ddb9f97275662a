"""The research panels of a task tab: Compare methods (IPA against best-of-N and prompting) and the alpha sweep.

What they show is plain functions of the service's reports first (tables and plot frames, no Gradio); then the
widgets, built by `research_panels`, which app/ui.py's task_tab calls with the tab's input fields, adapter list and
settings. API names (gradio_client): compare_<task> and sweep_<task>; each returns the report (the JSON download)
as its last output.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import gradio as gr
import pandas as pd

from app import research, share_ui, views
from app.research import DEFAULT_ALPHAS, INPUT_SOURCES
from app.service import Playground
from app.settings import Settings
from app.widgets import NO_ADAPTER, as_page_errors, bound, checked_by_service, with_parameters
from ipa.tasks import Task

METHOD_NOTES = {
    "base": "the base model alone",
    "ipa": "base + adapter (this tab's adapter and alpha)",
    "best_of_n": "N base samples for each one kept, the best by the task's reward; N spends IPA's decoding compute",
    "prompted": "the base, told the task's goal in its prompt",
    "prompted_ipa": "both: the told prompt, decoded with the adapter",
    "adapter_alone": "the adapter's own model without the base: the fine-tuned model (with LoRA on the base itself, "
                     "ipa at alpha 1 is exactly this model)",
}
COMPARE_NOTE = (
    "Is the adapter better than sampling the base N times and keeping the best by the reward, or than telling the "
    "base the goal, or than the fine-tuned model alone? The six methods of `python -m ipa.evaluation.compare` on a few prompts, with this tab's adapter and "
    "settings: " + "; ".join(f"**{name}**: {note}" for name, note in METHOD_NOTES.items()) + ". Reward ± the 95 % "
    "interval over prompts (one prompt has none); decode rows: next-token distributions computed. Few prompts "
    "decide little: the demo inputs with 2 samples say more than one input.")
SWEEP_NOTE = (
    "How the effect grows with alpha, and what it costs: the base + adapter column decoded again at each alpha "
    "(the same seed at each, so alpha 0 is the base), with the 95 % interval over prompts as the thin lines "
    "(`python -m ipa.evaluation.evaluate --alphas`). The vertical line marks the adapter's trained strength.")
SWEEP_PLOTS = {"mean_reward": "Reward", "kl_per_token": "KL(tailored ‖ base) per token", "perplexity": "Perplexity",
               "relevance": "Relevance (MiniLM cosine to the input)"}
"""The sweep's plots: metric -> title."""
COMPARE_JSON = ("The comparison as a JSON object (ipa.evaluation.compare --json's): task, n_prompts, samples_per_prompt, best_of_n "
                "(its N), methods ({method: {metric: value, metric_ci95: half-width}}), adapter, alpha, seed, decode (the "
                "settings), texts (the first prompt's samples per method), inputs.")
SWEEP_JSON = ("The sweep as a JSON object: task, n_prompts, samples_per_prompt, adapter, alpha (its trained strength), "
              "seed, decode (the settings), alpha_sweep (a point per alpha: mean_reward, kl_per_token, perplexity, "
              "relevance, distinct_2, each with its _ci95), inputs.")
TRAINED_SERIES = "trained strength"
LOW, HIGH = "95 % low", "95 % high"
SERIES_COLORS = {"mean": "#4f46e5", LOW: "#a5b4fc", HIGH: "#a5b4fc", TRAINED_SERIES: "#e11d48"}


def _cell(values: dict, metric: str, digits: int = 3) -> str:
    """'0.812 ± 0.051', or the value alone where it has no interval."""
    value = values.get(metric)
    if value is None:
        return "–"
    half = values.get(f"{metric}_ci95")
    return views.fmt(value, digits) + (f" ± {views.fmt(half, digits)}" if half is not None else "")


def _label(metric: str) -> str:
    return views.PART_LABELS.get(metric, metric.replace("_", " "))


def research_docs(task: Task) -> dict[str, str]:
    """One line per parameter of compare_<task> and sweep_<task> (MCP and the API page read them)."""
    return {**share_ui.task_docs(task),
            "prompts": '"input": the given input alone; "demos": the task\'s demo inputs.',
            "samples_per_prompt": "Samples per prompt and method, 1 to 4.",
            "alphas": f"The alphas to decode at, separated by commas, 0 to 5 (default {DEFAULT_ALPHAS!r})."}


def compare_frame(report: dict, task: Task) -> pd.DataFrame:
    """One row per method: reward ± interval, the task's own metrics, perplexity, relevance, distinct-2, KL, compute."""
    rows = []
    for name, values in report["methods"].items():
        row = {"method": name, "reward (± 95 %)": _cell(values, "mean_reward")}
        row.update({_label(m): _cell(values, m) for m in task.metrics})
        row.update({"perplexity": _cell(values, "perplexity", 1), "relevance": _cell(values, "relevance"),
                    "distinct-2": _cell(values, "distinct_2"), "KL / token": _cell(values, "kl_per_token"),
                    "decode rows": str(values["decode_rows"]), "seconds": views.fmt(values["seconds"], 1),
                    "N": str(values["n"]) if "n" in values else ""})
        rows.append(row)
    return pd.DataFrame(rows)


def texts_frame(report: dict) -> pd.DataFrame:
    """The first prompt's samples, one row per method."""
    k = report["samples_per_prompt"]
    return pd.DataFrame([{"method": name, **{f"sample {i + 1}": text.strip() for i, text in enumerate(texts[:k])}}
                         for name, texts in report["texts"].items()], columns=["method"] + [f"sample {i + 1}" for i in range(k)])


def _frame(rows: list[tuple]) -> pd.DataFrame:
    # Typed columns even when empty: an untyped empty frame makes the plot fall back to a categorical axis.
    return pd.DataFrame({"alpha": pd.Series([r[0] for r in rows], dtype="float64"),
                         "value": pd.Series([r[1] for r in rows], dtype="float64"),
                         "series": pd.Series([r[2] for r in rows], dtype="object")})


def sweep_frames(report: dict | None) -> dict[str, pd.DataFrame]:
    """For each of SWEEP_PLOTS a frame for gr.LinePlot(x="alpha", y="value", color="series"): the mean, the 95 %
    interval's two bounds and a vertical rule at the trained strength (from the lowest to the highest value)."""
    frames = {}
    for metric in SWEEP_PLOTS:
        rows = []
        for point in (report or {}).get("alpha_sweep", []):
            value, half = point.get(metric), point.get(f"{metric}_ci95")
            if value is None:
                continue
            rows.append((point["alpha"], value, "mean"))
            if half is not None:
                rows += [(point["alpha"], value - half, LOW), (point["alpha"], value + half, HIGH)]
        if rows:
            ys = [r[1] for r in rows]
            rows += [(report["alpha"], min(ys), TRAINED_SERIES), (report["alpha"], max(ys), TRAINED_SERIES)]
        frames[metric] = _frame(rows)
    return frames


def sweep_frame(report: dict) -> pd.DataFrame:
    """The sweep as a table: one row per alpha, each metric ± its interval; * marks the trained strength."""
    return pd.DataFrame([{"alpha": f"{p['alpha']:g}{' *' if p['trained_strength'] else ''}",
                          **{title: _cell(p, m, 1 if m == "perplexity" else 3) for m, title in SWEEP_PLOTS.items()},
                          "distinct-2": _cell(p, "distinct_2")} for p in report["alpha_sweep"]])


def done_line(report: dict) -> str:
    prompts = f"{report['n_prompts']} prompt{'s' * (report['n_prompts'] != 1)} × {report['samples_per_prompt']} sample" + (
        "s" * (report["samples_per_prompt"] != 1))
    best = f", best-of-N with N = {report['best_of_n']}" if "best_of_n" in report else ""
    backend = f" · toxicity: {report['toxicity_backend_label']}" if "toxicity" in report["task"] or "safety" in report["task"] else ""
    return (f"Done in {report['seconds']:g} s: {prompts}, adapter {views.e(report['adapter'])}{best}, seed {report['seed']}"
            f"{views.e(backend)}.")


def json_file(report: dict, kind: str) -> str:
    """The report as a JSON file for the Download button."""
    path = Path(tempfile.mkdtemp(prefix="ipa-research-")) / f"{kind}-{report['task']}-seed{report['seed']}.json"
    path.write_text(json.dumps(report, indent=2), encoding="utf-8")
    return str(path)


# --- the widgets ------------------------------------------------------------------------------------------------


def _source_choices(task: Task) -> list[tuple[str, str]]:
    return list(zip(("This tab's input", f"The task's {len(task.demos)} demo inputs"), INPUT_SOURCES))


DECODE = ["max_new_tokens", "temperature", "top_p", "seed"]
"""The tab's decoding settings both panels take (compare takes alpha too, before them)."""


def panel_inputs(task: Task, prefix: str):
    """A panel's prompt source and samples per prompt, in one row."""
    with gr.Row():
        source = checked_by_service(gr.Radio(_source_choices(task), value="input", label="Prompts",
                                              elem_id=f"{task.name}-{prefix}-prompts"))
        k = checked_by_service(gr.Slider(*Settings.LIMITS["n"][:2], value=1, step=1, label="Samples per prompt",
                                          elem_id=f"{task.name}-{prefix}-samples"))
    return source, k


def outputs_of(report: dict, kind: str, *views_):
    """A finished panel's outputs: the done line, its views, the JSON file and the report as data."""
    return (done_line(report), *views_, json_file(report, kind), report)


def streamed(work, done, n_outputs: int, what: str):
    """The panel's updates: each progress line into the status (the other outputs skipped), then `done(report)`."""
    def updates():
        for item in research.in_background(work()):
            if isinstance(item, str):
                yield (f"⏳ {views.e(item)}", *[gr.skip()] * (n_outputs - 1))
            else:
                yield done(item)
    return as_page_errors(updates, what)


def prompts_and_adapter(service: Playground, task: Task, source_: str, inputs: dict, adapter_: str | None):
    """The prompts a panel runs on (the tab's input or the demos, checked) and its adapter (None: the base)."""
    chosen = research.research_inputs(service, task.name, source_, inputs)
    return chosen, None if adapter_ in (None, "", NO_ADAPTER) else adapter_


# --- the panels' handlers: module level, the service and task given by widgets.bound ---------------------------


def compare(service: Playground, task: Task, *values):
    inputs = {f.name: v for f, v in zip(task.fields, values)}
    adapter_, alpha, max_new, temperature, top_p, seed, source_, k_ = values[len(task.fields):]

    def work():
        settings_ = Settings(alpha=alpha, max_new_tokens=max_new, temperature=temperature, top_p=top_p, seed=seed)
        chosen, adapter_name = prompts_and_adapter(service, task, source_, inputs, adapter_)
        return lambda say, cancelled: research.compare(service, task.name, chosen, k_, adapter_name, settings_, say,
                                                       cancelled)

    yield from streamed(work, lambda report: outputs_of(report, "compare", compare_frame(report, task), texts_frame(report)),
                        5, "Comparison")


def sweep(service: Playground, task: Task, *values):
    inputs = {f.name: v for f, v in zip(task.fields, values)}
    adapter_, max_new, temperature, top_p, seed, source_, k_, alphas_ = values[len(task.fields):]

    def work():
        settings_ = Settings(max_new_tokens=max_new, temperature=temperature, top_p=top_p, seed=seed)
        chosen, adapter_name = prompts_and_adapter(service, task, source_, inputs, adapter_)
        return lambda say, cancelled: research.sweep(service, task.name, chosen, k_, adapter_name, settings_, alphas_,
                                                     say, cancelled)

    def done(report):
        frames = sweep_frames(report)
        return outputs_of(report, "sweep", *[frames[m] for m in SWEEP_PLOTS], sweep_frame(report))

    yield from streamed(work, done, 8, "Alpha sweep")


def research_panels(service: Playground, task: Task, fields: list[gr.components.Component], adapter: gr.Dropdown,
                    settings: dict[str, gr.components.Component]) -> None:
    """Two accordions under a task tab: Compare methods and Alpha sweep, on the tab's input or its demo inputs, with
    the tab's adapter and settings (`settings`: alpha, max_new_tokens, temperature, top_p, seed widgets)."""
    name = task.name
    limit = f"at most {service.config.research_samples} samples a click"

    with gr.Accordion("Compare methods: IPA against best-of-N and prompting", open=False, elem_id=f"{name}-compare"):
        gr.Markdown(COMPARE_NOTE + f" <small>({limit}: prompts × samples × 5 methods)</small>")
        source, k = panel_inputs(task, "compare")
        run = gr.Button("Compare methods", elem_id=f"{name}-compare-run")
        status = gr.Markdown(elem_id=f"{name}-compare-status")
        table = gr.Dataframe(label="Methods (mean over samples; ± 95 % interval over prompts)", interactive=False, wrap=True,
                             elem_classes="ipa-table",
                             elem_id=f"{name}-compare-table")
        texts = gr.Dataframe(label="Their texts for the first prompt", interactive=False, wrap=True, elem_classes="ipa-table",
                             elem_id=f"{name}-compare-texts")
        download = gr.DownloadButton("Download JSON", elem_id=f"{name}-compare-json")
        with gr.Accordion("The comparison as data (what the API returns; ipa.evaluation.compare --json's object)", open=False):
            data = gr.JSON(label="Comparison")

    names = [f.name for f in task.fields] + ["adapter", "alpha", *DECODE, "prompts", "samples_per_prompt"]
    on_compare = with_parameters(bound(compare, service, task), names)
    share_ui.document(on_compare, research_docs(task),
                      f"{task.title}: compare six ways of spending the model on a few prompts (base; ipa, base + adapter; "
                      "best_of_n, the best by the reward of N base samples at IPA's decoding compute; prompted, the base "
                      "told the goal; prompted_ipa; adapter_alone, the fine-tuned model without the base), with the task's reward and metrics and their 95 % intervals.",
                      returns="The status line, the table, the first prompt's texts, the JSON file, and the comparison "
                      "as data: {task, n_prompts, samples_per_prompt, best_of_n, methods: {name: {metric: value}}}.")
    inputs, outputs = [*fields, adapter, settings["alpha"], *[settings[d] for d in DECODE], source, k], [status, table, texts, download, data]
    run.click(on_compare, inputs, outputs, api_name=f"compare_{name}", concurrency_id="research", concurrency_limit=2,
              show_progress="minimal")
    share_ui.mcp_tool(f"compare_{name}", share_ui.data_output(on_compare, outputs, data), on_compare, dict(zip(names, inputs)),
                      COMPARE_JSON, concurrency_id="research", concurrency_limit=2)

    with gr.Accordion("Alpha sweep: the effect and its cost against alpha", open=False, elem_id=f"{name}-sweep"):
        gr.Markdown(SWEEP_NOTE + f" <small>({limit}: prompts × samples × alphas)</small>")
        source_s, k_s = panel_inputs(task, "sweep")
        alphas = gr.Textbox(DEFAULT_ALPHAS, label="Alphas (0 to 5, separated by commas)", elem_id=f"{name}-sweep-alphas")
        run_s = gr.Button("Sweep alpha", elem_id=f"{name}-sweep-run")
        status_s = gr.Markdown(elem_id=f"{name}-sweep-status")
        plots = []
        for row in (list(SWEEP_PLOTS)[:2], list(SWEEP_PLOTS)[2:]):
            with gr.Row():
                # Empty at first as None: a plot that starts from an empty frame draws later series without colour
                # (Gradio 6.31: its colour scale keeps the first frame's empty list of series).
                plots += [gr.LinePlot(None, x="alpha", y="value", color="series", title=SWEEP_PLOTS[m], height=240,
                                      color_map=SERIES_COLORS, elem_id=f"{name}-sweep-{m}") for m in row]
        points = gr.Dataframe(label="The points (* the trained strength)", interactive=False, elem_classes="ipa-table",
                              elem_id=f"{name}-sweep-table")
        download_s = gr.DownloadButton("Download JSON", elem_id=f"{name}-sweep-json")
        with gr.Accordion("The sweep as data (what the API returns)", open=False):
            data_s = gr.JSON(label="Sweep")

    names = [f.name for f in task.fields] + ["adapter", *DECODE, "prompts", "samples_per_prompt", "alphas"]
    on_sweep = with_parameters(bound(sweep, service, task), names)
    share_ui.document(on_sweep, research_docs(task),
                      f"{task.title}: decode base + adapter at each alpha and measure reward, KL per token, perplexity "
                      "and relevance (means with 95 % intervals over prompts); alpha 0 is the base.",
                      returns="The status line, four plots, the points table, the JSON file, and the sweep as data "
                      "(ipa.evaluation.evaluate's alpha_sweep points with the settings).")
    inputs, outputs = [*fields, adapter, *[settings[d] for d in DECODE], source_s, k_s, alphas], [status_s, *plots, points, download_s, data_s]
    run_s.click(on_sweep, inputs, outputs, api_name=f"sweep_{name}", concurrency_id="research", concurrency_limit=2,
                show_progress="minimal")
    share_ui.mcp_tool(f"sweep_{name}", share_ui.data_output(on_sweep, outputs, data_s), on_sweep, dict(zip(names, inputs)),
                      SWEEP_JSON, concurrency_id="research", concurrency_limit=2)
