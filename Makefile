# The two set-up commands: `make demo` (a real certification on the embedded cluster) and
# `make test` (the whole suite). Both bootstrap whatever is missing first.
PY := .venv/bin/python
export PYTHONUNBUFFERED := 1

.PHONY: bootstrap demo test flake lint bench down clean

bootstrap:
	@bash scripts/bootstrap.sh

demo: bootstrap
	$(PY) -m harness.cli demo

test: bootstrap
	$(PY) -m ruff check core harness checkers workloads strategies tests benchmarks
	$(PY) -m pytest -q -ra --durations=15

# the suite N times in a row, then failures per test: `make flake N=10`; ARGS="-m cluster" repeats
# only the tests on real services, ARGS=tests/test_scenario_herd.py one file
N ?= 10
ARGS ?=
flake: bootstrap
	$(PY) scripts/flake.py -n $(N) -- $(ARGS)

lint: bootstrap
	$(PY) -m ruff check core harness checkers workloads strategies tests benchmarks

bench: bootstrap
	$(PY) -m benchmarks.run_all

down: bootstrap
	$(PY) -m harness.cli down

clean: down
	rm -rf .venv .cache
