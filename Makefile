# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CONFIG ?= dce-demo.yaml

.PHONY: run test install lint bench-load clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## make run: venv + install, demo config, SQLite migrated, demo marketplace seeded (idempotent),
## SIP on 5060 (udp+tcp) and HTTP on 8080
run: $(STAMP)
	$(BIN)/dce demo --write $(CONFIG) --seed
	$(BIN)/dce serve --config $(CONFIG)

## make test: the whole suite (unit + integration; externals skip locally, fail under DCE_REQUIRE_EXTERNAL=1)
test: $(STAMP)
	$(BIN)/ruff check dce tests bench
	$(BIN)/python -m pytest -q -ra

lint: $(STAMP)
	$(BIN)/ruff check dce tests bench

bench-load: $(STAMP)
	$(BIN)/python bench/sipp_load.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache dce.db dce.db-*
