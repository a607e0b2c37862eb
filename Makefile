# Two commands: `make run` (the whole system on this machine) and `make test`.
# Both install whatever is missing first (tools/bootstrap.sh).
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup run test lint unit bench schema clean

setup:
	@bash tools/bootstrap.sh

run: setup
	$(BIN)/python -m devstack

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest

unit: setup
	$(BIN)/python -m pytest tests/unit

bench: setup
	$(BIN)/python bench/bus.py

schema: setup
	$(BIN)/python -m schemas export schemas/catalogue.schema.json

clean:
	rm -rf .run .mypy_cache .ruff_cache .pytest_cache
