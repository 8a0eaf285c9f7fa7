# Two commands matter: `make demo` and `make test`. Both create .venv on a fresh
# machine through `make venv`, which is a no-op while .venv matches pyproject.toml.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

ISTIO_SCHEMAS := tests/istio_schemas

.PHONY: venv sysdeps nodedeps test demo protos bench mutate clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# Regenerate the protobuf-upb wire modules from our own small .proto files.
protos: venv
	$(BIN)/python -m grpc_tools.protoc -I . --python_out=. --pyi_out=. xds/wire/discovery.proto xds/wire/accesslog.proto xds/wire/otlp_logs.proto devtools/model_servers/wire/oip.proto control_plane/etcd/wire/etcd.proto control_plane/ha/wire/relay.proto

# System services the end-to-end tests run for real (Prometheus and etcd; Chromium and its WebDriver
# for the dashboard test), from Debian. As root it installs what is missing; otherwise the tests that
# need it say so (and fail under CI=true).
sysdeps:
	@command -v prometheus >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing prometheus (Debian package)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	  else echo "note: prometheus is not installed and this is not root: its tests will skip (fail under CI=true)"; fi; }
	@command -v etcd >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing etcd (Debian packages etcd-server, etcd-client)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends etcd-server etcd-client >/dev/null; \
	  else echo "note: etcd is not installed and this is not root: its tests will skip (fail under CI=true)"; fi; }
	@{ test -x /usr/bin/chromium && command -v chromedriver >/dev/null 2>&1; } || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium and chromium-driver (Debian packages)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null; \
	  else echo "note: chromium is not installed and this is not root: the dashboard test will skip (fail under CI=true)"; fi; }

# Istio's CRD schemas for the Istio tests (npm @kubernetes-models/istio, pinned by the lock file).
# As root it installs Debian's nodejs/npm if missing; otherwise those tests say so (and fail under CI=true).
nodedeps: $(ISTIO_SCHEMAS)/node_modules/.installed

$(ISTIO_SCHEMAS)/node_modules/.installed: $(ISTIO_SCHEMAS)/package.json $(ISTIO_SCHEMAS)/package-lock.json
	@command -v npm >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing nodejs and npm (Debian packages)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null; \
	  fi; }
	@if command -v npm >/dev/null 2>&1; then \
	  npm ci --prefix $(ISTIO_SCHEMAS) --no-audit --no-fund --loglevel=error && touch $@; \
	else echo "note: npm is not installed: the Istio CRD-schema tests will skip (fail under CI=true)"; fi

test: venv sysdeps nodedeps
	$(BIN)/python -m pytest -q -p no:cacheprovider

demo: venv
	$(BIN)/python -m devtools.demo

bench: venv
	$(BIN)/python bench/envoy_push.py
	$(BIN)/python bench/xds_fanout.py --proxies 1000
	$(BIN)/python bench/als_decode.py
	$(BIN)/python bench/relay.py
	$(BIN)/python bench/analysis_sim.py --quick
	$(BIN)/python bench/failover.py --runs 5

# Mutation testing of the pure modules (not part of `make test`: tens of minutes). MUTATE_SAMPLE mutants
# per module at random (seeded by MUTATE_SEED; 0 = all), MUTATE_MODULES=machine,rules,units,sequential,streams.
# Writes bench/mutation-report.md; scratch copies go to build/mutate/.
MUTATE_SAMPLE ?= 60
MUTATE_SEED ?= 15
MUTATE_MODULES ?=
MUTATE_JOBS ?= 2
MUTATE_STAMP := $(VENV)/.installed-mutate

$(MUTATE_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[test,mutate]'
	touch $@

mutate: venv $(MUTATE_STAMP)
	MUTATE_SAMPLE=$(MUTATE_SAMPLE) MUTATE_SEED=$(MUTATE_SEED) MUTATE_MODULES=$(MUTATE_MODULES) MUTATE_JOBS=$(MUTATE_JOBS) \
	  nice -n 15 $(BIN)/python -m devtools.mutate

clean:
	rm -rf $(VENV) .pytest_cache $(ISTIO_SCHEMAS)/node_modules build/mutate
