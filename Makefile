# Two entry points for newcomers: `make run` (app on the sample corpus) and `make test` (everything CI runs).
# Both build .venv/ once; a second run skips what is done.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
HOST ?= 127.0.0.1
PORT ?= 8501

.PHONY: run test setup browser lint clean

setup: $(VENV)/.installed

# torch first and pinned: a bare `torch` requirement would pull a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev,ray]"
	touch $@

# Debian's Chromium for the real-browser tests; never a downloaded browser.
browser:
	@command -v chromium >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }

# Through core.hosts: beyond loopback (HOST=0.0.0.0) it makes an access token and prints the link.
run: setup
	$(BIN)/python -m core.hosts $(BIN)/streamlit run app.py \
	  --server.address $(HOST) --server.port $(PORT) --server.headless true \
	  --browser.gatherUsageStats false

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: setup browser lint
	$(BIN)/python -m pytest -q --timeout 900

clean:
	rm -rf $(VENV) .pytest_cache
