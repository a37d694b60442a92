# jobq: `make run` starts the service, `make test` runs every test (CI calls it).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | sha256sum | cut -c1-16)

.PHONY: venv run test lint bench clean

venv: $(STAMP)

$(STAMP):
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	rm -f $(VENV)/.installed-*
	touch $@

# The data directory is app.py's default (the repository root) unless JOBQ_DATA_DIR says otherwise,
# the same one `.venv/bin/python app.py tenants ...` and the other admin commands use.
run: venv
	$(BIN)/python app.py

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

# pytest exits 5 when it collects nothing; that is reported, not hidden as a pass.
test: venv lint
	$(BIN)/python -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; fi; exit $$rc

bench: venv
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache test-output
