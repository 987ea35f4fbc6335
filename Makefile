# Each target installs what it needs into .venv (pinned by requirements.lock) first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Re-install whenever the lock or the project metadata changes.
STAMP  := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install demo test bench lock clean

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# --no-deps: the lock is the full closure; it also keeps facenet-pytorch's stale
	# upper pins (torch<2.3, numpy<2) from pulling an old torch (see models.md).
	$(BIN)/python -m pip install --quiet --no-deps -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

demo: install  ## the built-in default job: quickstart on the CPU, offline
	HF_HUB_OFFLINE=1 $(BIN)/attnedit-run experiment=quickstart

test: install  ## the whole test suite, offline
	HF_HUB_OFFLINE=1 WANDB_MODE=disabled $(BIN)/python -m pytest -q

bench: install  ## speed benchmarks (print ratios measured side by side; several minutes on a CPU)
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/bench_piebench_eval.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/bench_editing_time.py

lock:  ## regenerate requirements.lock (needs uv: pip install uv)
	uv pip compile pyproject.toml --extra dev --override requirements-overrides.txt \
	  --python-version 3.11 --python-platform x86_64-manylinux_2_28 -o requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache
