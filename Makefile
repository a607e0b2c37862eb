# Two commands: `make run` (the whole system on this machine) and `make test`.
# Both install whatever is missing first (tools/bootstrap.sh).
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup run test lint unit bench schema clean web web-check web-test

setup:
	@bash tools/bootstrap.sh

run: setup web
	$(BIN)/python -m devstack

lint: setup web-check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint web web-test
	$(BIN)/python -m pytest

# The web client (web/): npm packages from the committed lockfile, a TypeScript type check,
# an esbuild bundle in web/dist that the gateway serves at /. Rebuilt only when it changed.
WEB_SOURCES := $(shell find web/src -type f 2>/dev/null) web/build.mjs web/tsconfig.json
WEB_DEPS := web/node_modules/.package-lock.json

$(WEB_DEPS): web/package-lock.json web/package.json | setup
	cd web && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

web/dist/index.html: $(WEB_DEPS) $(WEB_SOURCES)
	cd web && npm run --silent build

web: web/dist/index.html

web-check: $(WEB_DEPS)
	cd web && npm run --silent typecheck

web-test: $(WEB_DEPS)
	cd web && npm test --silent

unit: setup
	$(BIN)/python -m pytest tests/unit

bench: setup
	$(BIN)/python bench/bus.py

schema: setup
	$(BIN)/python -m schemas export schemas/catalogue.schema.json

clean:
	rm -rf .run .mypy_cache .ruff_cache .pytest_cache web/dist web/dist-test tests/e2e/artifacts
