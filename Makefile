# The three commands of the README. Everything installs into .venv; nothing global but the
# Debian packages the tests need (redis-server).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= configs/tiny.yaml

.PHONY: setup run test lint bench proto chart-config chart-docs

setup:  ## venv, the CPU torch pin, the package with dev extras, redis-server
	@command -v redis-server >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq redis-server; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq redis-server; fi; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	@$(BIN)/irec --help >/dev/null && echo "setup done: $(BIN)/irec"

run:  ## ingest -> features -> train -> serve -> recommend on MovieLens-100K (CONFIG=... for another preset)
	$(BIN)/irec run --config $(CONFIG) $(ARGS)

test:  ## the full test suite
	$(BIN)/python -m pytest

lint:
	$(BIN)/ruff check .

bench:  ## feature-store benchmark (prints figures)
	$(BIN)/python benchmarks/feature_store.py

proto:  ## regenerate the gRPC modules from serving/recommend.proto
	$(BIN)/python -m grpc_tools.protoc -I. --python_out=. --grpc_python_out=. serving/recommend.proto

chart-config:  ## regenerate the chart's embedded configs (from configs/k8s.yaml) and values.schema.json
	cp configs/k8s.yaml charts/irec/files/platform.yaml
	$(BIN)/irec serve-config --config configs/k8s.yaml -o charts/irec/files/serve-config.yaml
	$(BIN)/python -m irec.k8s.schema

chart-docs:  ## regenerate the values table of charts/irec/README.md from values.yaml
	$(BIN)/python -m irec.k8s.docs
