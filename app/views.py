"""What the page shows, as plain functions of the service's results: text, HTML bars, tables, markdown.

No Gradio and no models here, so every piece is easy to test and to read.

What did not come from this code (an adapter's card, a name, a message quoting what a user gave) is shown as text,
never as markup: in HTML through e(), in Markdown through markdown(), whose every value is escaped (text_md) unless
the code marked it as its own (Markup), so a field added to a view later is escaped without anyone remembering to.

    >>> print(fmt(0.8712))
    0.87
    >>> token_highlights([TokenStep(" nice", 0.25, 0.1, 0.4)])
    [(' nice', 0.5)]
"""

from __future__ import annotations

import html
import math
import numbers
import re
import string

import pandas as pd

from ipa.models import model_label
from ipa.policy_adapter import AdapterCard
from ipa.decoding.run import Completion
from app.paths import public_paths
from app.adapter_store import AdapterEntry
from app.generation import Generation, TokenStep, token_steering
from ipa.tasks import Task
from ipa.tasks.metrics import interval, reward_means

KL_FULL = 1.0
"""KL (nats) at which a token is shaded fully red; below it the shade grows as sqrt(KL / KL_FULL), so that
the small but real moves of a KL-penalised adapter (0.05-0.3 nats) stay visible."""
TOKEN_LEGEND = (
    "**How to read this:** each token of the tailored text (sample 1) is shaded by how far the adapter moved the "
    "model's next-token distribution away from the base's at that step, KL(tailored ‖ base): white = the base would "
    f"have chosen the same way, deep red = {KL_FULL:g} nat or more, where the adapter steered."
)
PART_LABELS = {  # reward parts and card metrics; other names are shown with spaces for underscores
    "toxicity": "toxicity (lower is better)",
    "refusal": "refused (1 = yes)",
    "knowledge_precision": "knowledge precision",
    "knowledge_f1": "knowledge F1",
    "distinct_2": "distinct-2",
}
PENDING = "<div class='ipa-reward ipa-pending'>Scoring when the text is complete ...</div>"
EMPTY = "<div class='ipa-reward ipa-pending'>Press Generate to see the reward.</div>"


SIDES = {"left": "top", "right": "bottom"}
"""Where each column is when the two sit side by side, and where it is when they stack (a narrow screen)."""
STACKED_BELOW_PX = 768
"""The page stacks the two columns on screens narrower than this (CSS in app/ui.py; the words follow)."""


def side(where: str, capital: bool = False) -> str:
    """A column's place in words that follow the layout: "left" side by side, "top" when stacked (CSS shows one).

    >>> side("right")
    "<span class='ipa-wide'>right</span><span class='ipa-narrow'>bottom</span>"
    """
    wide, narrow = where, SIDES[where]
    if capital:
        wide, narrow = wide.capitalize(), narrow.capitalize()
    return f"<span class='ipa-wide'>{wide}</span><span class='ipa-narrow'>{narrow}</span>"


def fmt(x: float | None, digits: int = 2) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def e(text) -> str:
    return html.escape(str(text))


_MARKDOWN_PUNCTUATION = re.compile(r"([\\`*_{}\[\]()#!|~$:@^<>&])")


def text_md(value) -> str:
    r"""Any text from outside the code as Markdown that shows exactly that text, on one line: Markdown's punctuation
    backslash-escaped (no emphasis, link, image, code, table cell or $$ math), '<', '>' and '&' as HTML entities (no
    tag, no image fetched), ':', '@' and 'www.' broken up (no bare URL or address made into a link), line breaks
    as spaces (no heading or list of its own).

    >>> print(text_md("<img src=x> [Log in](https://evil.example) *now*"))
    &lt;img src=x&gt; \[Log in\]\(https\://evil.example\) \*now\*
    """
    text = " ".join(str(value).splitlines())
    text = _MARKDOWN_PUNCTUATION.sub(lambda m: html.escape(m.group(1), quote=False) if m.group(1) in "<>&"
                                     else "\\" + m.group(1), text)
    return re.sub(r"(?i)\b(www)\.", r"\1\\.", text)


class Markup(str):
    """Markdown this code wrote (a fragment made by markdown(), a fixed phrase): markdown() puts it in as it is."""


class _TextValues(string.Formatter):
    def format_field(self, value, format_spec: str) -> str:
        if isinstance(value, Markup):
            return str(value)
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return format(value, format_spec)
        return text_md(value)


def markdown(template: str, **values) -> Markup:
    """The code's own Markdown `template` with each {value} shown as text: numbers formatted by their spec, Markup
    as it is, anything else (a card's text, a name, a list) escaped by text_md. The one way a value enters the
    page's Markdown, so that none is forgotten.

    >>> markdown("**{name}** · alpha {alpha:g}", name="<b>x</b>", alpha=1.5)
    '**&lt;b&gt;x&lt;/b&gt;** · alpha 1.5'
    """
    return Markup(_TextValues().format(template, **values))


def _number(value) -> float | None:
    """A metric as a number, or None where a card holds none (missing, null)."""
    return float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else None


def error_text(err: BaseException | str) -> str:
    """An error's message as the page shows it: as text. Gradio's pop-ups render their message as HTML, and messages
    quote what the user typed (an adapter name, concepts), so <, > and & are escaped; KeyError's quotes dropped. No
    absolute path: the service's errors name files relative to its folders already (app.adapter_store.public_text); a
    bug's message (an OSError's file) names a file by its name (app.paths).

    >>> error_text(ValueError("There is no adapter named '<img src=x>'."))
    "There is no adapter named '&lt;img src=x&gt;'."
    >>> error_text(OSError("Cannot write /srv/ipa/runs/x/card.json: disk full"))
    'Cannot write card.json: disk full'
    """
    return html.escape(public_paths(str(err).strip("'\"")), quote=False)


# --- the two columns -----------------------------------------------------------------------------------


def column_text(completions: list[Completion]) -> str:
    """The samples of one column as plain text: one sample as is, several numbered."""
    if len(completions) == 1:
        return completions[0].text.strip()
    return "\n\n".join(f"[{i}] {c.text.strip()}" for i, c in enumerate(completions, 1))


def _bar(value: float, css: str = "") -> str:
    width = max(0.0, min(1.0, value)) * 100
    return f"<div class='ipa-bar {css}'><div style='width:{width:.1f}%'></div></div>"


def reward_spread(scores: list[dict]) -> tuple[float, float | None]:
    """(mean reward, half-width of its 95 % interval) over a column's samples of one input (ipa.tasks.metrics.interval:
    the samples are independent draws for this input); half-width None for a single sample.

    >>> m, half = reward_spread([{"reward": 0.2}, {"reward": 0.4}, {"reward": 0.6}])
    >>> round(m, 2), round(half, 2)          # 4.303 · 0.2 / √3
    (0.4, 0.5)
    """
    return interval([s["reward"] for s in scores])


def reward_html(scores: list[dict] | None, task: Task, compare_to: list[dict] | None = None,
                backend: str | None = None, pending: bool = False) -> str:
    """The reward of a column (mean over samples, ± its spread) as a number and a bar, its parts below, smaller.

    compare_to: the base column's scores, to show the difference and how sure it is (difference_html).
    backend: the toxicity classifier's label, named under the numbers where the reward uses it.
    """
    if scores is None:
        return PENDING if pending else EMPTY
    means = reward_means(scores)
    means.pop("reward")
    reward, half = reward_spread(scores)
    # The samples' range, which stays inside [0, 1] (the 95 % interval of a mean of 3 samples is wider than that).
    rewards = [s["reward"] for s in scores]
    spread = (f"<span class='ipa-spread'>{fmt(min(rewards))}–{fmt(max(rewards))}</span>" if len(rewards) > 1 else "")
    delta, verdict = "", ""
    if compare_to is not None:
        delta, verdict = difference_html(scores, compare_to)
    parts = "".join(
        f"<div class='ipa-part'><span class='ipa-part-name'>{e(PART_LABELS.get(k, k))}</span>"
        f"{_bar(v, 'small' + (' bad' if k == 'toxicity' else ''))}<span class='ipa-part-value'>{fmt(v)}</span></div>"
        for k, v in means.items()
    )
    each = f" · mean of {len(scores)} samples ({', '.join(fmt(s['reward']) for s in scores)})" if len(scores) > 1 else ""
    note = f"<div class='ipa-note'>reward = {e(task.reward)}{e(each)}</div>{verdict}"
    if backend:
        note += f"<div class='ipa-note ipa-backend'>Toxicity scored by {e(backend)}.</div>"
    return (f"<div class='ipa-reward'><div class='ipa-reward-head'><span>Reward</span><b>{fmt(reward)}</b>{spread}{delta}</div>"
            f"{_bar(reward)}<div class='ipa-parts'>{parts}</div>{note}</div>")


def difference_html(scores: list[dict], base: list[dict]) -> tuple[str, str]:
    """(the head's "±d vs base", a note saying how sure it is) for a tailored column against its base column.

    The samples are paired: each tailored sample is drawn with its base sample's random numbers, so the difference is
    measured pair by pair, with its 95 % interval over the pairs (ipa.tasks.metrics.interval). The head calls it a gain or
    a loss only when that interval leaves out 0; otherwise it says the samples cannot tell, and what would.

    >>> head, note = difference_html([{"reward": r} for r in (0.9, 0.95, 1.0)], [{"reward": r} for r in (0.2, 0.3, 0.35)])
    >>> head
    "<span class='ipa-delta up'>+0.67 vs base</span>"
    >>> "95 % interval +0.59 to +0.74" in note
    True
    """
    pairs = [s["reward"] - b["reward"] for s, b in zip(scores, base)] if len(scores) == len(base) else []
    diff, half = interval(pairs) if pairs else (reward_spread(scores)[0] - reward_spread(base)[0], None)
    n = len(pairs)
    if half is None:
        kind = "up" if diff > 0.005 else "down" if diff < -0.005 else "same"
        how = (f"{'One sample a column' if n == 1 else 'No paired samples'}: a difference of {diff:+.2f} says little. "
               "Draw more samples (Settings), or run <b>Compare methods</b> below on the demo inputs.")
        return f"<span class='ipa-delta {kind}'>{diff:+.2f} vs base</span>", f"<div class='ipa-note ipa-verdict'>{how}</div>"
    low, high = diff - half, diff + half
    span = f"95 % interval {low:+.2f} to {high:+.2f} over {n} paired samples"
    if low > 0 or high < 0:
        kind = "up" if low > 0 else "down"
        return (f"<span class='ipa-delta {kind}'>{diff:+.2f} vs base</span>",
                f"<div class='ipa-note ipa-verdict'>Difference {diff:+.2f} ({span}: each tailored sample is drawn with "
                "its base sample's random numbers).</div>")
    return (f"<span class='ipa-delta same'>{diff:+.2f} vs base, not sure</span>",
            f"<div class='ipa-note ipa-verdict'>Difference {diff:+.2f} ({span}): the interval holds 0, so {n} samples "
            "cannot tell a gain from chance. For a sure answer, draw more samples (Settings) or run <b>Compare "
            "methods</b> below on the demo inputs.</div>")


def also_scored_html(scores: list[dict] | None, label: str | None, compare_to: list[dict] | None = None) -> str:
    """One line under a column's reward: its texts' mean score by the second adapter's reward (composed adapters).

    >>> also_scored_html([{"reward": 0.5}, {"reward": 0.7}], "sentiment", compare_to=[{"reward": 0.4}])
    "<div class='ipa-note ipa-also'>Also scored by <b>sentiment</b>: 0.60 (+0.20 vs base)</div>"
    """
    if not label or scores is None:
        return ""
    mean, _ = reward_spread(scores)
    delta = f" ({mean - reward_spread(compare_to)[0]:+.2f} vs base)" if compare_to is not None else ""
    return f"<div class='ipa-note ipa-also'>Also scored by <b>{e(label)}</b>: {fmt(mean)}{delta}</div>"


def token_highlights(steps: list[TokenStep]) -> list[tuple[str, float]]:
    """(token, shade in [0, 1]) pairs for gr.HighlightedText's score mode (red, opacity = shade)."""
    # Newlines would vanish in running text; show them as a visible mark.
    return [(s.token.replace("\n", "↵"), round(min(1.0, math.sqrt(max(0.0, s.kl) / KL_FULL)), 3)) for s in steps]


LOW_COVERAGE = 0.5
"""Below this share of the base's probability in the server's top k, a token's distributions are warned about: they
were computed on the few tokens the server reported (a black-box base, ipa.decoding.remote)."""


def coverage_line(steps: list[TokenStep]) -> str:
    """With a black-box base: how much of the base's probability the server's top k held, per token where low, and a
    warning when it was low somewhere; '' for a local base."""
    covered = [s for s in steps if s.covered is not None]
    if not covered:
        return ""
    mean = sum(s.covered for s in covered) / len(covered)
    low = [s for s in covered if s.covered < LOW_COVERAGE]
    line = (f"The base is a black box: its server's top-k log-probabilities held {mean:.0%} of its probability per "
            f"token on average (lowest {min(s.covered for s in covered):.0%}); each token was chosen among those.")
    if low:
        listed = ", ".join(f"“{e((s.token.strip() or s.token).replace(chr(10), '↵'))}” {s.covered:.0%}" for s in low[:8])
        line += (f"  \n⚠ **Low coverage at {len(low)} token{'s' if len(low) != 1 else ''}** ({listed}"
                 f"{', ...' if len(low) > 8 else ''}): there the tailored distribution was computed on less than "
                 f"{LOW_COVERAGE:.0%} of the base's probability. Ask the server for more log-probabilities "
                 "(--top-logprobs, within its cap).")
    return line


def steering_summary(steps: list[TokenStep]) -> str:
    """One line under the token view: the mean KL and the most steered tokens (and, with a black-box base, how much
    of its probability the server's top k covered)."""
    if not steps:
        return ""
    coverage = coverage_line(steps)
    coverage = "  \n" + coverage if coverage else ""
    mean = sum(s.kl for s in steps) / len(steps)
    top = sorted((s for s in steps if s.kl >= 0.05), key=lambda s: -s.kl)[:3]
    line = f"Mean KL {mean:.3f} nats per token."
    if top:
        line += " Most steered: " + ", ".join(f"“{s.token.strip() or s.token}” ({s.kl:.2f}; base p = {s.base_prob:.2f} → "
                                              f"{s.tailored_prob:.2f})" for s in top) + "."
    else:
        line += (" No single step moved by 0.05 nats or more; small moves early on can still send the sampled text "
                 "down a different path.")
    return line + coverage


def notice_markdown(update: Generation, entry: AdapterEntry | None) -> str:
    """What the right (stacked: bottom) column is, said plainly: the adapter and its strength, or why it equals the base."""
    if update.waiting:
        ahead = f"{update.waiting} request{'s' if update.waiting != 1 else ''}"
        return f"⏳ **Many people are generating right now: {ahead} ahead of you.** Yours starts as soon as there is room."
    if update.adapter is None:
        text = (f"**No adapter selected: the {side('right')} column is the base model itself, identical to the {side('left')}.** "
                "Pick an adapter above, or train one in the *Train an adapter* tab.")
    elif not update.steered:
        text = f"**Alpha is 0: the adapter “{e(update.adapter)}” is switched off, so both columns are the base model.**"
    else:
        composed = "".join(f" and “{e(name)}” at alpha = {alpha:g}" for name, alpha in update.more)
        text = (f"{side('right', capital=True)} column: base + adapter “{e(update.adapter)}” at alpha = {update.alpha:g}"
                f"{composed}, sampled with the same random numbers as the {side('left')}.")
        if entry is not None and entry.card.steps == 0:
            text += " This adapter is untrained (0 steps), so it changes nothing yet."
    extra = [f"seed {update.seed}"] + [f"⚠ {w}" for w in update.warnings]
    return text + "  \n<small>" + " · ".join(e(x) for x in extra) + "</small>"


SETTINGS_SHOWN = ("n", "max_new_tokens", "temperature", "top_p")
"""The settings a result's data names besides its adapter, alpha and seed (the page's Settings panel)."""


def scores_data(update: Generation) -> dict:
    """The whole result as plain data (the API's view, shown in a collapsed panel, downloaded as JSON, and what MCP
    clients get): the inputs, adapter and settings it used, each sample's text and scores; once scored, each
    column's mean reward and the half-width of its 95 % interval (reward_spread), as the reward panels show them."""
    settings = update.settings
    data = {
        "task": update.task, "inputs": update.inputs, "adapter": update.adapter, "alpha": update.alpha,
        "steered": update.steered, "seed": update.seed, "toxicity_backend": update.toxicity_backend,
        "settings": {name: getattr(settings, name) for name in SETTINGS_SHOWN} if settings else None,
        "base": [{"text": c.text, **(s or {})} for c, s in zip(update.base, update.base_scores or [None] * len(update.base))],
        "tailored": [{"text": c.text, "mean_kl": (sum(c.kl) / len(c.kl)) if c.kl else 0.0, **(s or {})}
                     for c, s in zip(update.tailored, update.tailored_scores or [None] * len(update.tailored))],
        "warnings": update.warnings,
    }
    if update.more:
        data["more"] = [{"adapter": name, "alpha": alpha} for name, alpha in update.more]
    if update.also_scored_by and update.base_scores_2 is not None:
        data["also_scored"] = {"by": update.also_scored_by, "base": update.base_scores_2, "tailored": update.tailored_scores_2,
                               "mean_reward": {"base": reward_spread(update.base_scores_2)[0],
                                               "tailored": reward_spread(update.tailored_scores_2)[0]}}
    if update.base_scores and update.tailored_scores:
        spreads = {"base": reward_spread(update.base_scores), "tailored": reward_spread(update.tailored_scores)}
        data["mean_reward"] = {column: m for column, (m, _) in spreads.items()}
        data["mean_reward_ci95"] = {column: half for column, (_, half) in spreads.items()}
    return data


def tailored_label(adapter: str | None, second: str | None = None) -> str:
    """The right column's title, naming every adapter composed (alphas are in the notice above the columns, which
    follows the sliders).

    >>> tailored_label("toxicity", "sentiment")
    'Base + adapters “toxicity” and “sentiment”'
    """
    if not adapter:
        return "Base + adapter (no adapter: same as base)"
    if second:
        return f"Base + adapters “{adapter}” and “{second}”"
    return f"Base + adapter “{adapter}”"


def tokens_of(update: Generation) -> list[TokenStep]:
    return token_steering(update.tailored[0]) if update.tailored else []


def generation_outputs(update: Generation, task: Task, entry: AdapterEntry | None) -> tuple:
    """The eight outputs of a Generate event: base text, tailored text, their reward panels, the token view,
    the line under it, the notice above the columns, and the result as data (once scored).

    Plain values only (no gr.update): API clients receive exactly these. The token view comes with the last update
    only: while text streams in, every update would resend it whole (with many users, a quarter of the server's work
    went into streaming)."""
    steps = tokens_of(update) if update.steered and update.done else []
    backend = update.toxicity_backend
    if not update.steered:
        summary = "  \n*Nothing to show: no adapter steered this text.*"
    else:
        summary = "  \n" + steering_summary(steps) if update.done and steps else ""
    return (
        column_text(update.base),
        column_text(update.tailored),
        reward_html(update.base_scores, task, backend=backend, pending=True)
        + also_scored_html(update.base_scores_2, update.also_scored_by),
        reward_html(update.tailored_scores, task, compare_to=update.base_scores if update.steered else None,
                    backend=backend, pending=True)
        + also_scored_html(update.tailored_scores_2, update.also_scored_by,
                           compare_to=update.base_scores_2 if update.steered else None),
        token_highlights(steps),
        TOKEN_LEGEND + summary,
        notice_markdown(update, entry),
        scores_data(update) if update.done else None,
    )


# --- adapter cards -----------------------------------------------------------------------------------------


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _changes(before: dict, after: dict, names) -> list[str]:
    """'name a → b' for each metric that both columns report."""
    out = []
    for name in names:
        a, b = _number(before.get(name)), _number(after.get(name))
        if a is not None and b is not None:
            digits = 1 if name.endswith("perplexity") else 2
            out.append(markdown("{name} {a} → {b}", name=PART_LABELS.get(name, name.replace("_", " ")),
                                a=Markup(fmt(a, digits)), b=Markup(fmt(b, digits))))
    return out


def evaluation_markdown(card: AdapterCard, task: Task) -> list[str]:
    """The card's held-back figures, and how they were measured: the `ipa.evaluation.evaluate --write-card` report where
    the card has one, else the training run's own evaluation (fewer prompts, the tailored column only)."""
    # Training-time figures are shown as reward, task metrics and KL only: cards written before ipa.tasks.metrics
    # pooled perplexity and distinct-2 differently.
    shown = [*task.metrics]
    if isinstance(card.evaluation.get("base"), dict) and isinstance(card.evaluation.get("tailored"), dict) \
            and card.evaluation["base"] and card.evaluation["tailored"]:
        ev = card.evaluation
        before, after = ev["base"], ev["tailored"]
        shown += ["perplexity", "relevance", "distinct_2"]
        how = markdown("base → base + adapter on {n} held-back prompts × {k} samples, seed {seed}{date} (`ipa.evaluation.evaluate`)",
                       n=ev.get("n_prompts", "?"), k=ev.get("samples_per_prompt", "?"), seed=ev.get("seed", "?"),
                       date=markdown(", {date}", date=ev["date"]) if ev.get("date") else Markup(""))
    else:
        before, after = card.metrics_before, card.metrics_after
        run = card.training.get("run")
        run = run if isinstance(run, dict) else card.training  # cards before TrainConfig's split kept these at the top
        prompts, samples = run.get("eval_prompts"), run.get("eval_samples")
        size = (markdown("{prompts} held-back prompts × {samples} sample{s}", prompts=prompts, samples=samples,
                         s=Markup("" if samples == 1 else "s")) if prompts and samples else Markup("held-back prompts"))
        how = markdown("before → after training, measured during training on {size}{continued}", size=size,
                       continued=Markup("; before: from the adapter it continued" if card.training.get("continued_from") else ""))
    reward = _number(before.get("mean_reward")), _number(after.get("mean_reward"))
    if None in reward:
        return []
    figures = [f"Held-back reward **{fmt(reward[0])} → {fmt(reward[1])}** ({reward[1] - reward[0]:+.2f})"]
    figures += _changes(before, after, shown)
    if _number(after.get("kl_per_token")) is not None:
        figures.append(f"KL {fmt(_number(after['kl_per_token']), 3)} nats/token")
    return [" · ".join(figures),
            f"<small>{how}; metrics as defined in ipa/tasks/metrics.py, reward as the task defined it then</small>"]


ALGORITHM_NAMES = {"pg": "policy gradient", "quark": "Quark", "none": "untrained"}


def card_markdown(entry: AdapterEntry | None, task: Task) -> str:
    """The adapter's card in a few lines: what, how it was trained, and what it did on held-back prompts."""
    if entry is None:
        return markdown("**No adapter for {task} yet.** Both columns will show the base model. "
                        "Train one in the *Train an adapter* tab; it appears here when it is done.", task=task.title.lower())
    card: AdapterCard = entry.card
    head = markdown("**{name}** · {source} · task *{task}* · {algorithm}, {steps} step{s}", name=entry.name,
                    source=entry.source, task=card.task, algorithm=ALGORITHM_NAMES.get(card.algorithm, card.algorithm),
                    steps=card.steps, s=Markup("" if card.steps == 1 else "s"))
    if card.train_seconds:
        head += markdown(" in {time}", time=_minutes(card.train_seconds))
    if card.machine:
        head += markdown(" on {machine}", machine=card.machine)
    lines = [head, *evaluation_markdown(card, task)]
    lines.append(markdown("Trained at alpha {alpha:g} with the {combination} combination, for {model}{sizes}{stopped}",
                          alpha=card.alpha, combination=card.combination, model=model_label(card.base_model),
                          sizes=f" ({entry.sizes})" if entry.sizes else "",
                          stopped=Markup(" · stopped early" if card.training.get("interrupted") else "")))
    return "  \n".join(lines)


# --- training ------------------------------------------------------------------------------------------------


def training_status_html(status: dict) -> str:
    """A progress bar with the run's phase, step, time and reward before/after."""
    state = status.get("state", "idle")
    if state == "idle":
        return "<div class='ipa-train'><div class='ipa-note'>No run yet. Pick a task and press Start.</div></div>"
    budget = f"{status['steps']} steps" if status.get("steps") else f"{status.get('minutes', 0):g} min of training"
    facts = [f"step {status['step']}", f"{status['elapsed']:.0f} s training of {budget}",
             f"{status['wall_seconds']:.0f} s since start"]
    if status.get("reward_before") is not None:
        facts.append(f"held-back reward before {fmt(status['reward_before'])}")
    if status.get("reward_after") is not None:
        facts.append(f"after {fmt(status['reward_after'])}")
    if status.get("queued"):
        facts.append(f"{status['queued']} run{'s' if status['queued'] != 1 else ''} waiting")
    css = {"done": "done", "failed": "failed"}.get(state, "")
    error = f"<div class='ipa-error'>{e(status['error'])}</div>" if status.get("error") else ""
    return (f"<div class='ipa-train {css}'><div class='ipa-train-head'><b>{e(status['adapter'])}</b>"
            f"<span>{e(status['phase'])}</span></div>{_bar(status['progress'], 'progress')}"
            f"<div class='ipa-note'>{e(' · '.join(facts))}</div>{error}</div>")


def curve_frame(status: dict, key: str) -> pd.DataFrame:
    """One column of the run's history against the step, for gr.LinePlot."""
    history = status.get("history", [])
    # Typed columns even when empty: an untyped empty frame makes the plot fall back to a categorical axis.
    return pd.DataFrame({"step": pd.Series([h["step"] for h in history], dtype="int64"),
                         key: pd.Series([h[key] for h in history], dtype="float64")})


REWARD_SERIES = "reward"
"""The combined reward's line among its parts' in reward_curves."""
SMOOTHED_SERIES = "reward, smoothed"
HELD_BACK_SERIES = "held-back reward"
SMOOTHING = 5
"""Steps in the smoothed curve's moving mean: a batch of 8 samples is noisy step to step."""


def reward_curves(status: dict) -> pd.DataFrame:
    """The batch reward and each of its parts (an objective's blocks) against the step, the reward's moving mean over
    SMOOTHING steps (where the trend shows), and the held-back evaluation (before at step 0, after at the last step:
    the figure the adapter's card keeps), one row a (step, series) pair, for gr.LinePlot(x="step", y="value",
    color="series").

    >>> status = {"history": [{"step": 1, "reward": 0.5, "parts": {"topic": 0.4}}, {"step": 2, "reward": 0.7, "parts": {}}],
    ...           "reward_before": 0.45, "reward_after": 0.6}
    >>> reward_curves(status).values.tolist()  # doctest: +NORMALIZE_WHITESPACE
    [[1, 0.5, 'reward'], [1, 0.4, 'topic'], [2, 0.7, 'reward'], [1, 0.5, 'reward, smoothed'],
     [2, 0.6, 'reward, smoothed'], [0, 0.45, 'held-back reward'], [2, 0.6, 'held-back reward']]
    """
    history = status.get("history", [])
    rows = [(h["step"], value, name) for h in history
            for name, value in [(REWARD_SERIES, h["reward"]), *h.get("parts", {}).items()]]
    rewards = [h["reward"] for h in history]
    rows += [(h["step"], sum(rewards[max(0, i + 1 - SMOOTHING):i + 1]) / len(rewards[max(0, i + 1 - SMOOTHING):i + 1]),
              SMOOTHED_SERIES) for i, h in enumerate(history)]
    if status.get("reward_before") is not None:
        rows.append((0, status["reward_before"], HELD_BACK_SERIES))
        if status.get("reward_after") is not None and history:
            rows.append((history[-1]["step"], status["reward_after"], HELD_BACK_SERIES))
    return pd.DataFrame({"step": pd.Series([r[0] for r in rows], dtype="int64"),
                         "value": pd.Series([r[1] for r in rows], dtype="float64"),
                         "series": pd.Series([PART_LABELS.get(r[2], r[2]) for r in rows], dtype="object")})


def samples_frame(status: dict) -> pd.DataFrame:
    """The most recent sample generations of the run."""
    rows = [{"step": s["step"], "reward": round(s["reward"], 3), "prompt": "…" + s["prompt"][-80:] if len(s["prompt"]) > 80 else s["prompt"],
             "sample": s["text"]} for s in status.get("samples", [])]
    return pd.DataFrame(rows, columns=["step", "reward", "prompt", "sample"])


def machine_notice(has_gpu: bool, machine: str) -> str:
    """What the machine means for training speed."""
    if has_gpu:
        return (f"**GPU: {e(machine)}.** A 5-minute run with a batch of 64 trains a useful adapter; "
                "generation keeps working while it trains.")
    return (f"**No GPU on this machine ({e(machine)}): training runs on the CPU, far more slowly than on a GPU.** "
            "The defaults (2 minutes, a batch of 8) show the RL loop at work and may move the reward a little; the "
            "shipped adapters were trained on a GPU with batches of hundreds. Generation keeps working while a run "
            "trains, more slowly.")


# --- your own objective --------------------------------------------------------------------------------------


def blocks_markdown(rewards: dict[str, type]) -> str:
    """What each reward block scores and the parameters it takes (the objective builder's help), from the classes'
    docstrings and PARAMS (ipa.rewards.params), so the page never says anything the library does not check."""
    lines = ["| block | what it scores (each in [0, 1]) | parameters (JSON) |", "|---|---|---|"]
    for name, cls in rewards.items():
        what = (cls.__doc__ or "").strip().split("\n")[0]
        params = getattr(cls, "PARAMS", ())
        example = "{" + ", ".join(f'"{p.name}": ' + ('"the ocean and the sea"' if p.kind == "text" else '"sea, waves"'
                                                      if p.kind == "words" else "20" if p.kind == "number" else
                                                      '"class-1-food"' if p.kind == "name" else f'"{p.choices[0]}"')
                                  for p in params if p.required) + "}"
        shown = "; ".join(p.describe() for p in params) or "none"
        if any(p.required for p in params):
            shown += f" · e.g. `{example}`"
        cells = [name, what, shown]  # the project's own text, not a user's: only the table's bars need escaping
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


# --- class mode: blind votes, what the class thinks, the teacher's view ----------------------------------------------


def _rate(rate, low, high) -> Markup:
    """'0.75 (0.60-0.86)': a share with its 95 % interval; '–' without one (the code's own text: a table keeps it)."""
    return Markup("–" if rate is None else f"{rate:.2f} ({low:.2f}-{high:.2f})")


def _side(side: str) -> Markup:
    """'base' or 'adapter NAME' with the name in bold (escaped)."""
    if side.startswith("adapter "):
        return markdown("adapter **{name}**", name=side.removeprefix("adapter "))
    return markdown("**{side}**", side=side)


VOTE_WORDS = {"A": "A is better", "B": "B is better", "same": "about the same"}


def reveal_markdown(reveal: dict) -> str:
    """What the page says once a vote is stored: saved, which text was which, each one's reward, and whether the reward
    agrees with the vote."""
    verdict = reveal["reward_choice"]
    agreement = ("" if reveal["agrees"] is None else
                 " The reward **agrees** with you." if reveal["agrees"] else " The reward **disagrees**: it prefers the other text.")
    return markdown("**Saved** (your vote: {vote}). **A** was {a} (reward {ra:.2f}); **B** was {b} (reward {rb:.2f}); "
                    "reward: {reward}, whose verdict is {verdict}.{agreement}",
                    vote=VOTE_WORDS[reveal["choice"]], a=_side(reveal["A"]["side"]), ra=reveal["A"]["reward"],
                    b=_side(reveal["B"]["side"]), rb=reveal["B"]["reward"], reward=reveal["reward"],
                    verdict=Markup(VOTE_WORDS[verdict]), agreement=Markup(agreement))


def _table(header: list[str], rows: list[list]) -> str:
    """A Markdown table: the header is the code's, every cell escaped (text_md also escapes '|')."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c if isinstance(c, Markup) else text_md(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def agreement_markdown(rows: list[dict]) -> str:
    """The class against the reward, one row per comparison: the class's win rate of the first side, the reward's on
    the same pairs, and how often the two agree, each with its 95 % interval."""
    if not rows:
        return "No votes yet: open *Which is better?* under any tab's result and vote."
    table = _table(["reward", "comparison", "votes", "class: win rate (95 %)", "reward: win rate (95 %)",
                    "class and reward agree (95 %)"],
                   [[r["reward"], markdown("{a} vs {b}", a=_side(r["subject"]), b=_side(r["opponent"])),
                     Markup(f"{r['votes']} ({r['class_wins']}-{r['class_losses']}, {r['class_ties']} same)"),
                     _rate(r["class_win_rate"], r["class_low"], r["class_high"]),
                     _rate(r["reward_win_rate"], r["reward_low"], r["reward_high"]),
                     Markup(f"{_rate(r['agreement'], r['agreement_low'], r['agreement_high'])} of {r['compared']}")]
                    for r in rows])
    return Markup(table + "\n\n<small>Win rate: the share of decisive votes (A or B) for the first side; \"about the same\" "
                  "and reward ties are left out. Where the reward likes an adapter the class does not, the reward is being "
                  "gamed (or measures something the class does not care about).</small>")


def leaderboard_markdown(rows: list[dict]) -> str:
    if not rows:
        return "No adapter has been voted on against the base yet."
    return _table(["#", "adapter", "source", "trained by", "scored by", "votes", "class win rate vs base (95 %)"],
                  [[str(i), r["adapter"], r["source"], r["owner"] or "–", r["reward"], f"{r['decisive']} of {r['votes']}",
                    _rate(r["win_rate"], r["low"], r["high"])] for i, r in enumerate(rows, 1)])


def models_markdown(models: list[dict]) -> str:
    if not models:
        return "No preference model has been learned yet."
    return _table(["model", "class", "votes (decisive)", "held-out agreement with the votes (95 %)", "learned"],
                  [[m["name"], m["class"] or "–", Markup(f"{m['votes']} ({m['decisive']})"),
                    _rate(m["agreement"], m["agreement_low"], m["agreement_high"]), m["created"] or ""] for m in models])


def learned_markdown(summary: dict) -> str:
    """The preference model just learned: its held-out agreement, said plainly, before anyone trains on it."""
    coin = summary["agreement_low"] is not None and summary["agreement_low"] <= 0.5
    return markdown("Learned **{name}** from {votes} votes ({decisive} decisive) in {seconds:.1f} s. On votes it was not "
                    "fitted on, it picks the text the class picked **{rate}** of the time (95 % interval {low:.2f}-{high:.2f})."
                    "{warning}", name=summary["name"], votes=summary["votes"], decisive=summary["decisive"],
                    seconds=summary["seconds"], rate=f"{summary['agreement']:.2f}", low=summary["agreement_low"],
                    high=summary["agreement_high"],
                    warning=Markup(" **That is no better than a coin**: collect more votes before training on it." if coin
                                   else " Train an adapter on it below, then vote on the new adapter against the base."))


def students_markdown(rows: list[dict]) -> str:
    if not rows:
        return "Nobody has joined this class yet."
    return _table(["student", "signed in with", "pairs shown", "votes cast", "joined"],
                  [[r["student"], r["sign_in"], str(r["pairs"]), str(r["votes"]), r["joined"]] for r in rows])


def recent_votes_markdown(rows: list[dict]) -> str:
    if not rows:
        return "No votes yet."
    return _table(["time", "student", "scored by", "vote", "chose", "reason"],
                  [[r["time"], r["student"], r["reward"], VOTE_WORDS[r["choice"]], r["chose"], r["reason"] or "–"] for r in rows])


def runs_markdown(rows: list[dict]) -> str:
    if not rows:
        return "No runs or adapters of this class yet."
    return _table(["run / adapter", "owner", "state", "trained for", "reward before", "after"],
                  [[r["run"], r["owner"] or "–", r["state"], r["for"], fmt(r["reward_before"]), fmt(r["reward_after"])]
                   for r in rows])
