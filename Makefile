# incident-responder: `make run` sets up and serves on embedded defaults; `make test` runs every check.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
DATA   ?= ./data
HOST   ?= 127.0.0.1
PORT   ?= 8080
# A development key for the quickstart; set IR_API_KEYS yourself for anything real.
export IR_API_KEYS ?= default:dev-key-change-me

.PHONY: setup run test lint typecheck unit clean eval

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# CPU torch first: a bare torch requirement would pull a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	HF_HUB_OFFLINE=1 $(BIN)/incident-responder prepare-model  # the ONNX export, once
	touch $@

setup: $(VENV)/.installed

run: setup
	$(BIN)/incident-responder runbooks import --examples --data-dir $(DATA)
	$(BIN)/incident-responder serve --host $(HOST) --port $(PORT) --data-dir $(DATA)

lint: setup
	$(BIN)/ruff check src tests scripts bench
	$(BIN)/ruff format --check src tests scripts bench

typecheck: setup
	$(BIN)/mypy

unit: setup
	HF_HUB_OFFLINE=1 $(BIN)/pytest -q

test: lint typecheck unit

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache

# The server image (deploy/Dockerfile, docs/deploy.md): not part of `make test` (it downloads
# and installs the whole stack: minutes). With podman the image is built in Docker format,
# which keeps the HEALTHCHECK; IMAGE_BUILD_FLAGS passes more (build args, --isolation).
IMAGE             ?= incident-responder:dev
IMAGE_TOOL        ?= $(shell docker info >/dev/null 2>&1 && echo docker || echo podman)
IMAGE_BUILD_FLAGS ?=
.PHONY: image
image:
	$(IMAGE_TOOL) build -f deploy/Dockerfile -t $(IMAGE) \
	  $(if $(filter docker,$(IMAGE_TOOL)),,--format docker --ignorefile deploy/Dockerfile.dockerignore) \
	  $(IMAGE_BUILD_FLAGS) .
