# Every target sets up its own virtual environment on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: install run test test-slow bench clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "torch==2.13.0"
	$(PIP) install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

run: install
	$(PY) -m memgeo bench --seeds 2 --max-prompts 10 --mixture-conditions 10

test: install
	$(PY) -m pytest -q -n 2

test-slow: install
	$(PY) -m pytest -q -n 2 --runslow

bench: install
	$(PY) benchmarks/bench_closed_form.py
	$(PY) benchmarks/bench_estimators.py
	$(PY) benchmarks/bench_signals.py
	$(PY) benchmarks/bench_presets.py --model benchmarks/results/small_data_testbed --out benchmarks/results/presets/presets.md
	$(PY) benchmarks/bench_flipd.py --model benchmarks/results/small_data_testbed --out benchmarks/results/flipd_probe_time/flipd.md
	$(PY) benchmarks/bench_sd_scale.py
	$(PY) benchmarks/bench_explain.py --out benchmarks/results/explain_sd_bench/primary_1

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
