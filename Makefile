PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv codegen check lint typecheck test run compat clean browser beam-venv

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,local,bench]'
	touch $(STAMP)

venv: $(STAMP)

codegen: $(STAMP)
	$(PY) -m codegen

check: $(STAMP)
	$(PY) -m codegen --check

lint: $(STAMP)
	$(VENV)/bin/ruff check bpj codegen tests benchmarks examples
	$(VENV)/bin/ruff format --check bpj codegen tests benchmarks examples

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# Debian's Chromium, which the console's tests drive through Playwright (no browser download from elsewhere).
CHROMIUM ?= /usr/bin/chromium
browser:
	test -x $(CHROMIUM) || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }

# Apache Beam pins protobuf and pyarrow below the main venv's, so its DirectRunner test runs in its own venv.
BEAM_STAMP := .venv-beam/.installed
$(BEAM_STAMP): pyproject.toml
	test -x .venv-beam/bin/python || $(PYTHON) -m venv .venv-beam
	.venv-beam/bin/python -m pip install -q -e . 'apache-beam>=2.60' pytest
	touch $(BEAM_STAMP)
beam-venv: $(BEAM_STAMP)

# Two pytest workers (pytest-xdist), a file to each at a time (its module-scoped stack or cluster starts once):
# most tests wait on servers, jobs and subprocesses, so two overlap well
# on this 2-core machine. TEST_WORKERS=0 runs the suite in one process.
TEST_WORKERS ?= 2
test: check lint typecheck browser beam-venv
	BPJ_BEAM_PYTHON=$(CURDIR)/.venv-beam/bin/python BPJ_CHROMIUM=$(CHROMIUM) $(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

clean:
	rm -rf $(VENV) .venv-beam .pytest_cache .mypy_cache .hypothesis

# The main job on the local stack: train, upload, run a GCS and a BigQuery job, read, check every prediction.
# Options go through RUN_ARGS: make run RUN_ARGS="--instances 10000 --transport rest"
RUN_ARGS ?=
run: $(STAMP)
	$(PY) examples/main_job.py $(RUN_ARGS)

# Runtime tests under protobuf 5 and 6 (the main venv has 7, which grpcio-tools needs). The official
# libraries' newest releases need protobuf >= 6.33.5, so under 5 pip picks older ones whose schemas lack
# fields added since: the field-by-field comparison with them runs under 6 and 7 only.
COMPAT_TESTS := tests/test_transport_behaviour.py tests/test_aio.py tests/test_grpc.py tests/test_rest.py \
	tests/test_http_rules.py tests/test_clients.py tests/test_import.py tests/test_retry.py tests/test_checksum.py
compat: $(STAMP)
	for v in 5 6; do \
	  test -x .venv-pb$$v/bin/python || $(PYTHON) -m venv .venv-pb$$v; \
	  .venv-pb$$v/bin/python -m pip install -q -e . pytest hypothesis google-cloud-aiplatform google-cloud-bigquery-storage "protobuf==$$v.*" || exit 1; \
	  .venv-pb$$v/bin/python -c "import google.protobuf as p; print('protobuf', p.__version__)"; \
	  extra=""; [ $$v = 5 ] || extra="tests/test_wire_roundtrip.py tests/outputs/test_wire.py"; \
	  .venv-pb$$v/bin/python -m pytest -q -p no:cacheprovider $(COMPAT_TESTS) $$extra || exit 1; \
	done
