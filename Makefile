# Two commands on a fresh machine: `make demo` and `make test`. Both create or refresh .venv.
PYTHON ?= python3
VENV   ?= .venv
# torch is pinned here so these machines take the local CPU wheel; override for CUDA builds,
# e.g. `make test TORCH=torch==2.5.1`.
TORCH  ?= torch==2.13.0
# Exactly one FAISS build: gpu where nvidia-smi finds a GPU, cpu otherwise (override: FAISS=cpu).
FAISS  ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu)
DATA   ?= ../shared/data/taobao-userbehavior-sample/flink_ecommerce-time-slice/UserBehavior.csv.gz
PYTEST_ARGS ?=

BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(FAISS)

.PHONY: venv demo test test-unit test-integration clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[$(FAISS),dev]"
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(STAMP)

demo: venv
	$(BIN)/streamrec demo --data $(DATA)

test: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-unit: venv
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

test-integration: venv
	$(BIN)/python -m pytest tests/integration $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
