"""What the page shows, as plain functions (app/views.py): an adapter's card, a column's scores, error messages
(no Gradio, no models)."""

from __future__ import annotations

import copy
import html
import re
from pathlib import Path

import pytest

from ipa.policy_adapter import AdapterCard
from ipa.decoding.run import Completion
from app.adapter_store import AdapterEntry
from app.generation import Generation
from app.views import card_markdown, error_text, markdown, reward_html, scores_data, side, text_md
from ipa.tasks import TASKS

TRAINING_METRICS = {"before": {"mean_reward": 0.84, "reward_toxicity": 0.16, "perplexity": 18.7, "distinct_2": 0.91},
                    "after": {"mean_reward": 0.98, "reward_toxicity": 0.02, "perplexity": 17.9, "distinct_2": 0.9,
                              "kl_per_token": 0.155}}
EVALUATION = {"n_prompts": 64, "samples_per_prompt": 4, "seed": 0, "date": "2026-12-03",
              "base": {"mean_reward": 0.794, "avg_max_toxicity": 0.433, "toxicity_probability": 0.359, "perplexity": 22.8,
                       "relevance": 0.251, "distinct_2": 0.982, "kl_per_token": 0.0},
              "tailored": {"mean_reward": 0.959, "avg_max_toxicity": 0.110, "toxicity_probability": 0.047, "perplexity": 24.0,
                           "relevance": 0.214, "distinct_2": 0.984, "kl_per_token": 0.12}}


def entry(**card) -> AdapterEntry:
    card = AdapterCard(task="toxicity", algorithm="pg", steps=202, metrics_before=TRAINING_METRICS["before"],
                       metrics_after=TRAINING_METRICS["after"], training={"eval_prompts": 16, "eval_samples": 2}, **card)
    return AdapterEntry("toxicity", card, "shipped", Path("adapters/trained/toxicity"))


def test_a_card_without_an_evaluation_says_it_was_measured_during_training_and_on_how_many():
    text = card_markdown(entry(), TASKS["toxicity"])
    assert "Held-back reward **0.84 → 0.98** (+0.14)" in text
    assert "16 held-back prompts × 2 samples" in text and "during training" in text and "ipa/tasks/metrics.py" in text
    assert "KL 0.155 nats/token" in text
    # Old cards pooled perplexity and distinct-2 over tokens: the page does not show them as if defined today.
    assert "perplexity" not in text and "distinct-2" not in text


def test_a_card_of_a_split_train_config_says_how_many_prompts_too():
    card = entry().card
    card.training = {"run": {"eval_prompts": 8, "eval_samples": 1}, "algo": {}, "model": {}, "decode": {}}
    text = card_markdown(AdapterEntry("t", card, "trained here", Path("x")), TASKS["toxicity"])
    assert "8 held-back prompts × 1 sample" in text and "1 samples" not in text


def test_a_card_with_an_evaluation_shows_it_instead():
    text = card_markdown(entry(evaluation=EVALUATION), TASKS["toxicity"])
    assert "Held-back reward **0.79 → 0.96** (+0.16)" in text
    assert "avg max toxicity 0.43 → 0.11" in text and "toxicity probability 0.36 → 0.05" in text
    assert "perplexity 22.8 → 24.0" in text and "relevance 0.25 → 0.21" in text and "distinct-2 0.98 → 0.98" in text
    assert "64 held-back prompts × 4 samples, seed 0, 2026-12-03" in text and "ipa.evaluation.evaluate" in text
    assert "0.84" not in text and "KL 0.120 nats/token" in text


def test_reward_panel_shows_the_mean_of_the_samples_its_spread_and_its_parts():
    scores = [{"reward": 0.25, "coverage": 0.5, "fluency": 0.5}, {"reward": 0.75, "coverage": 1.0, "fluency": 0.75}]
    html = reward_html(scores, TASKS["commongen"], compare_to=[{"reward": 0.25, "coverage": 0.5, "fluency": 0.5}] * 2)
    assert "<b>0.50</b>" in html and "mean of 2 samples (0.25, 0.75)" in html
    assert "0.25–0.75</span>" in html  # the samples' range; the interval (12.706 · 0.354 / √2 = 3.18) is wider than [0, 1]
    assert ">coverage<" in html and ">0.75<" in html and ">0.62<" in html
    # Pairs +0.00 and +0.50: the interval of their mean difference (12.706 · 0.354 / √2) holds 0: not called a gain.
    assert "+0.25 vs base, not sure" in html and "ipa-delta same" in html
    assert "the interval holds 0, so 2 samples cannot tell" in html and "Compare methods" in html


@pytest.mark.parametrize("base, tailored, shown", [
    ([0.2, 0.21, 0.19], [0.8, 0.81, 0.79], "ipa-delta up'>+0.60 vs base<"),        # far apart: a gain
    ([0.05, 0.6, 0.3], [0.95, 0.98, 1.0], "ipa-delta up'>+0.66 vs base<"),         # noisy base, every pair far up: a gain
    ([0.5, 0.1, 0.9], [0.9, 0.0, 1.0], "ipa-delta same'>+0.13 vs base, not sure<"),  # pairs up and down: cannot tell
    ([0.4], [0.3], "ipa-delta down'>-0.10 vs base<"),                                # one sample: no interval
])
def test_a_difference_is_a_gain_or_a_loss_only_when_its_paired_interval_leaves_out_zero(base, tailored, shown):
    html = reward_html([{"reward": r} for r in tailored], TASKS["sentiment"], compare_to=[{"reward": r} for r in base])
    assert shown in html


def test_the_result_data_carries_each_columns_mean_and_spread():
    completion = Completion(0, 0, "base", [5], "a", False, [-1.0], [-1.0], [0.0], ["a"])
    update = Generation("sentiment", None, 1.0, False, [completion] * 3, [completion] * 3, done=True,
                        base_scores=[{"reward": r} for r in (0.2, 0.4, 0.6)],
                        tailored_scores=[{"reward": r} for r in (0.2, 0.4, 0.6)])
    data = scores_data(update)
    assert data["mean_reward"] == {"base": pytest.approx(0.4), "tailored": pytest.approx(0.4)}
    assert data["mean_reward_ci95"]["base"] == pytest.approx(4.303 * 0.2 / 3 ** 0.5, abs=1e-3)


def test_column_places_are_named_for_both_layouts():
    # Side by side: left/right; stacked on a narrow screen: top/bottom (the page's CSS shows one of the two).
    assert side("left") == "<span class='ipa-wide'>left</span><span class='ipa-narrow'>top</span>"
    assert "Right</span><span class='ipa-narrow'>Bottom" in side("right", capital=True)


@pytest.mark.parametrize("typed, shown", [
    ("<img src=x>", "&lt;img src=x&gt;"),
    ("<a href='https://example.com'>link</a>", "&lt;a href='https://example.com'&gt;link&lt;/a&gt;"),
    ("<script>alert(1)</script>", "&lt;script&gt;alert(1)&lt;/script&gt;"),
    ("fish & chips", "fish &amp; chips"),
    ("**bold**", "**bold**"),  # pop-ups render HTML, not Markdown: it shows as typed
])
def test_error_messages_show_what_the_user_typed_as_text(typed, shown):
    assert error_text(ValueError(f"There is no adapter named {typed}.")) == f"There is no adapter named {shown}."
    assert error_text(KeyError(typed)) == shown  # KeyError's quotes are dropped


PAYLOAD = ("<img src=https://evil.example/x.png><a href='https://evil.example'>Log in again</a> [Log in](https://evil.example)"
           " ![x](https://evil.example/y.png) <https://evil.example> **bold** _it_ `code` $$x$$ https://evil.example/z"
           " www.evil.example a@evil.example | cell | &amp; \\*\n# heading\n- item\n> quote")
"""The issue's upload and every other way Markdown or HTML can show more than text: tags, links, images, autolinks,
emphasis, code, math, table cells, entities, escapes, and a line break starting a heading, a list or a quote."""
TEXT_TAGS = {"p", "br", "strong", "em", "small", "code"}
"""What the card's own Markdown renders to (`ipa.evaluation.evaluate` is the code's own code span)."""


def rendered(markdown_text: str) -> tuple[set[str], str]:
    """The tags and the visible text of Markdown as a CommonMark renderer with raw HTML and GFM tables shows it
    (Gradio's Markdown renders GFM and lets HTML through, sanitised)."""
    from markdown_it import MarkdownIt

    out = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"]).render(markdown_text)
    return set(re.findall(r"<([A-Za-z][A-Za-z0-9]*)", out)), html.unescape(re.sub(r"<[^>]+>", "", out))


def shows_as_text(markdown_text: str, text: str) -> bool:
    """Whether `text` is shown exactly (line breaks as spaces), nothing of it as markup, and nothing a browser would
    fetch or a renderer would make a link of (GFM's bare-URL autolinks: a scheme's ':', 'www.', '@')."""
    tags, visible = rendered(markdown_text)
    flat = " ".join(text.splitlines())
    return (tags <= TEXT_TAGS and flat in " ".join(visible.split("\n"))
            and not re.search(r"(?<!\\)://|(?<!\\)@|(?i:www\.)", markdown_text))


@pytest.mark.parametrize("field", ["name", "task", "algorithm", "combination", "machine", "base_model", "evaluation.date",
                                   "evaluation.n_prompts", "evaluation.seed", "training.run.eval_prompts"])
def test_every_card_field_shown_is_text_never_markup(field):
    """Defence in depth: AdapterCard.check refuses most of these values, but the card's view escapes every field
    even of a card that was never checked (set after it was made)."""
    item = entry(evaluation=copy.deepcopy(EVALUATION)) if field.startswith("evaluation") else entry()
    card = item.card
    card.training = {"run": {"eval_prompts": 16, "eval_samples": 2}}
    if field == "name":
        item.name = PAYLOAD
    elif "." in field:
        part, key = field.split(".", 1)
        target = getattr(card, part)
        for k in key.split(".")[:-1]:
            target = target[k]
        target[key.split(".")[-1]] = PAYLOAD
    else:
        setattr(card, field, PAYLOAD)
    text = card_markdown(item, TASKS["toxicity"])
    assert shows_as_text(text, PAYLOAD), text


def test_the_card_view_still_renders_its_own_markdown():
    tags, visible = rendered(card_markdown(entry(machine="NVIDIA H100 (80 GB)"), TASKS["toxicity"]))
    assert {"strong", "em", "small"} <= tags and "toxicity · shipped · task toxicity · policy gradient, 202 steps" in visible
    assert "on NVIDIA H100 (80 GB)" in visible and "Trained at alpha 1 with the residual combination" in visible


@pytest.mark.parametrize("value", [PAYLOAD, None, 3, ["a", "<b>"], {"x": "[y](z)"}, "", "\\", "a_b_c", "$$"])
def test_markdown_shows_any_value_as_text_and_numbers_by_their_format(value):
    out = markdown("**{label}**: {value}", label="field", value=value)
    assert shows_as_text(out, str(value)) and rendered(out)[0] <= {"p", "strong"}
    assert text_md(value) in out
    assert markdown("{x:.2f} and {y:g}", x=0.125, y=2.0) == "0.12 and 2"


def test_a_black_box_base_shows_its_covered_mass_and_warns_when_low():
    """Issue 27, item 3: each token's covered mass (the server's top k) under the token view, a warning naming the
    tokens where it was below LOW_COVERAGE; nothing for a local base."""
    from app.generation import TokenStep
    from app.views import LOW_COVERAGE, steering_summary

    local = [TokenStep(" a", 0.1, 0.2, 0.3), TokenStep(" b", 0.2, 0.2, 0.3)]
    assert "black box" not in steering_summary(local)
    high = [TokenStep(" a", 0.1, 0.2, 0.3, 0.95), TokenStep(" b", 0.2, 0.2, 0.3, 0.85)]
    text = steering_summary(high)
    assert "held 90% of its probability per token on average (lowest 85%)" in text and "Low coverage" not in text
    low = high + [TokenStep(" rare", 0.3, 0.01, 0.02, LOW_COVERAGE - 0.1)]
    text = steering_summary(low)
    assert "Low coverage at 1 token" in text and "“rare” 40%" in text and "--top-logprobs" in text
