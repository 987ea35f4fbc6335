# Each target installs what it needs into .venv (pinned by requirements.lock) first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
UV_VERSION := 0.13.9
# Re-install whenever the lock or the project metadata changes.
STAMP  := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install install-pip demo browser test bench gpu-check lock clean

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# uv installs the lock in seconds (benchmarks/README.md: set-up time); pip is the fallback
	# when uv cannot be installed. Both use --no-deps: the lock is the full closure, and it keeps
	# facenet-pytorch's stale upper pins (torch<2.3, numpy<2) from pulling an old torch.
	# --no-config: pyproject's [tool.uv] overrides (torch>=2.4, for `make lock`) would otherwise
	# replace the lock's exact pins and install the newest torch.
	if $(BIN)/python -m pip install --quiet "uv==$(UV_VERSION)" && \
	   $(BIN)/uv pip install --quiet --no-config --python $(BIN)/python --no-deps -r requirements.lock && \
	   $(BIN)/uv pip install --quiet --no-config --python $(BIN)/python --no-deps -e . ; then :; \
	else \
	  echo "uv failed or is unavailable: installing with pip (2-4 minutes)"; \
	  $(BIN)/python -m pip install --quiet --no-deps -r requirements.lock && \
	  $(BIN)/python -m pip install --quiet --no-deps -e . ; \
	fi
	rm -f $(VENV)/.installed-* && touch $@

install-pip:  ## the same install without uv (the fallback path, measured in benchmarks/README.md)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --no-deps -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

demo: install  ## the built-in default job: quickstart on the CPU, offline; then its HTML report (ARGS: more overrides)
	run_dir="$$(HF_HUB_OFFLINE=1 $(BIN)/attnedit-run experiment=quickstart $(ARGS) | tee /dev/stderr \
	  | sed -n 's/^run dir: //p')"; test -n "$$run_dir" && HF_HUB_OFFLINE=1 $(BIN)/attnedit-report "$$run_dir"

# tests/report/test_html.py opens the HTML report in a headless Chromium: Debian's package,
# installed here when missing (root or password-less sudo); elsewhere that test is skipped.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	command -v google-chrome >/dev/null 2>&1 || { \
	  sudo=$$([ "$$(id -u)" = 0 ] || echo "sudo -n"); \
	  echo "installing Chromium for the HTML report's browser test (apt-get install chromium)"; \
	  { $$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	    $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; } >/dev/null || \
	  echo "note: Chromium could not be installed (needs apt and root): the HTML report's browser test will be skipped"; }

test: install browser  ## the whole test suite, offline
	HF_HUB_OFFLINE=1 WANDB_MODE=disabled $(BIN)/python -m pytest -q

bench: install  ## speed benchmarks (print ratios measured side by side; several minutes on a CPU)
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/bench_piebench_eval.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/bench_editing_time.py

gpu-check: install  ## the GPU cost targets on one GPU, offline, < 8 min (benchmarks/gpu_check.py)
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/gpu_check.py

lock:  ## regenerate requirements.lock (needs uv: pip install uv)
	uv pip compile pyproject.toml --extra dev --override requirements-overrides.txt \
	  --python-version 3.11 --python-platform x86_64-manylinux_2_28 -o requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache
