"""The playground in a real browser: Debian's Chromium driven by Playwright, as a student would use it.

Opens the page, runs the toxicity tab on a demo example, waits for both columns and their rewards, switches
to another task, and saves a screenshot of the toxicity results: under pytest's temporary folder, or where
$IPA_SCREENSHOT says. `make screenshot` sets it to docs/screenshot.png (the README shows it); nothing else
writes there.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from tasks import TASKS

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


@pytest.fixture
def screenshot(tmp_path) -> Path:
    return Path(os.environ.get("IPA_SCREENSHOT") or tmp_path / "screenshot.png")


@pytest.fixture(scope="module")
def page(playground_app):
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors = []
        page.on("pageerror", lambda err: errors.append(str(err)))
        page.goto(playground_app.url)
        yield page
        browser.close()
        assert not errors, f"the page raised JavaScript errors: {errors}"


def test_toxicity_tab_generates_side_by_side_with_rewards_then_another_task_opens(page, playground_app, screenshot):
    expect(page.locator("h1")).to_contain_text("IPA Playground", timeout=60_000)
    demo = TASKS["toxicity"].demos[0]["text"]

    # Clicking a demo fills the text box; Generate streams both columns and then scores them.
    page.get_by_text(demo[:40]).first.click()
    expect(page.locator("#toxicity-text textarea")).to_have_value(demo)
    page.click("#toxicity-generate")
    for column in ("base", "tailored"):
        expect(page.locator(f"#toxicity-{column}-reward .ipa-reward-head b")).to_have_text(re.compile(r"^\d\.\d\d$"), timeout=180_000)
        assert page.locator(f"#toxicity-{column} textarea").input_value().strip()
    backend = playground_app.service.toxicity_backend("toxicity")
    expect(page.locator("#toxicity-base-reward")).to_contain_text(backend)
    expect(page.locator("#toxicity-tailored-reward")).to_contain_text("vs base")
    expect(page.locator("#toxicity-base-reward")).to_contain_text("mean of 3 samples")
    assert "[3]" in page.locator("#toxicity-base textarea").input_value()  # three samples a column by default
    expect(page.locator("#toxicity-reward-note")).to_contain_text("can miss")
    expect(page.locator("#toxicity-notice")).to_contain_text("alpha")
    expect(page.locator("#toxicity-tokens .score-token").first).to_be_visible()

    page.mouse.move(0, 0)  # no hover highlight in the picture
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 10_000

    page.click("#tab-commongen-button")
    expect(page.locator("#commongen-generate")).to_be_visible()
    expect(page.locator("#commongen-concepts textarea")).to_be_visible()
    expect(page.locator("#toxicity-generate")).to_be_hidden()


def test_on_a_phone_every_tab_is_reachable_and_the_notes_say_top_and_bottom(page, playground_app, tmp_path):
    phone = page.context.browser.new_page(viewport={"width": 390, "height": 844})
    try:
        phone.goto(playground_app.url)
        expect(phone.locator("h1")).to_contain_text("IPA Playground", timeout=60_000)
        # The tabs wrap onto more rows instead of hiding some behind a "..." menu: each one is a visible button.
        for tab in [*TASKS, "train", "try", "adapters"]:
            phone.locator(f"#tab-{tab}-button").click()
            opened = {"train": "#train-start", "adapters": "#adapters-download"}.get(tab, f"#{tab}-generate")
            expect(phone.locator(opened)).to_be_visible()
        phone.locator("#tab-toxicity-button").click()
        # The columns stack, and the words follow: the base is on top, base + adapter at the bottom.
        base, tailored = phone.locator("#toxicity-base").bounding_box(), phone.locator("#toxicity-tailored").bounding_box()
        assert tailored["y"] > base["y"] + base["height"] - 1 and abs(tailored["x"] - base["x"]) < 2
        expect(phone.locator("#header .ipa-narrow").first).to_have_text("top")
        expect(phone.locator("#header .ipa-wide").first).to_be_hidden()
        phone.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
    finally:
        phone.close()
    # On a wide screen the same words say left and right.
    expect(page.locator("#header .ipa-wide").first).to_have_text("left")
    expect(page.locator("#header .ipa-narrow").first).to_be_hidden()


def test_clicking_a_token_shows_the_inspector_table_and_branching_regenerates_both_columns(page):
    # The sentiment tab: no other test generates there, so its reward box fills only with this result.
    expect(page.locator("h1")).to_contain_text("IPA Playground", timeout=60_000)
    page.click("#tab-sentiment-button")
    page.fill("#sentiment-text textarea", TASKS["sentiment"].demos[0]["text"])
    page.click("#sentiment-generate")
    expect(page.locator("#sentiment-tailored-reward .ipa-reward-head b")).to_have_text(re.compile(r"^\d\.\d\d$"), timeout=180_000)

    # Once generated, the inspector shows the first step; clicking the second token shows that step: the chosen
    # token, the top 10 under each distribution.
    expect(page.locator("#sentiment-inspect-summary")).to_contain_text("Step 0 of the tailored text", timeout=30_000)
    page.locator("#sentiment-tokens .score-token").nth(1).click()
    expect(page.locator("#sentiment-inspect-summary")).to_contain_text("Step 1 of the tailored text, sample 1", timeout=30_000)
    table = page.locator("#sentiment-inspect-table")
    for header in ("p base", "p tailored"):
        expect(table).to_contain_text(header)
    expect(table.get_by_role("row")).to_have_count(1 + 10)  # the header and the top 10

    page.click("#sentiment-branch")  # with the alternative offered first: the likeliest other token
    expect(page.locator("#sentiment-branched")).to_contain_text("Branched at step 1 of the tailored text", timeout=120_000)
    expect(page.locator("#sentiment-branched")).to_contain_text("tailored:")
