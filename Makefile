# The two commands of the README: `make demo` and `make test`. Everything else is a helper.
.PHONY: setup demo test test-fast lint stop ui

FACTORY := .venvs/factory/bin

setup:  ## create the three environments (idempotent)
	./infra/setup-envs.sh

demo: setup  ## build, train, evaluate, serve and index: the whole graph on the embedded default
	$(FACTORY)/factory demo

test: setup  ## the test suite (what CI runs), then the linter
	$(FACTORY)/python -m pytest -v --tb=short --durations=15
	$(FACTORY)/ruff check .
	$(FACTORY)/lint-imports

test-fast: setup  ## the developer loop: every test that neither trains nor waits for the graph
	$(FACTORY)/python -m pytest -q -m "not slow" --durations=10
	$(FACTORY)/ruff check .
	$(FACTORY)/lint-imports

lint:
	$(FACTORY)/ruff check .
	$(FACTORY)/lint-imports

stop:  ## stop the demo's vLLM server and its gateway
	$(FACTORY)/factory stop

ui:  ## the Dagster UI on this project (http://127.0.0.1:3000)
	$(FACTORY)/factory ui
