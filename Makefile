# sam-tuner: `make demo` (the whole loop) and `make test` (all tests) work on a bare machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv jars browser demo test test-cluster bench-console test-unit lint bench-streams bench-decider bench-projector bench-restore bench-decider-memory bench-decider-backlog bench-trainer bench-quality bench-inference bench-analytics soak kafka-up kafka-down lock clean

venv: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip==24.3.1
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

jars: venv
	$(BIN)/samtuner kafka fetch

demo: venv jars
	$(BIN)/samtuner demo

# The browser tests drive Debian's chromium (Playwright with executable_path; no browser download).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@{ command -v chromium && command -v chromedriver; } >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium chromium-driver >/dev/null; }
	@command -v chromium >/dev/null 2>&1 || { echo "chromium did not install" >&2; exit 1; }

test: venv jars browser
	$(BIN)/pytest -q tests -m "not cluster"

# Broker faults under the pipeline on its own 3-broker KRaft cluster (tests/integration/test_broker_failover.py):
# apart from `make test` for its length; .ci/run calls both.
test-cluster: venv jars
	$(BIN)/pytest -q -s tests -m cluster

test-unit: venv
	$(BIN)/pytest -q tests/unit

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench-streams: venv jars
	$(BIN)/python benchmarks/bench_streams.py

# The projector alone, in process: us of CPU per event on a real chDB store (no Kafka).
bench-projector: venv
	$(BIN)/python benchmarks/bench_projector.py

# The decider's batch path in one process (no Kafka, no Faust): us per event by stage.
bench-decider: venv
	$(BIN)/python benchmarks/bench_decider.py

bench-restore: venv jars
	$(BIN)/python benchmarks/bench_restore.py

# The decider's batch path in process (no broker), 500k soak-mix events: RSS and tracemalloc after the rings fill.
bench-decider-memory: venv
	$(BIN)/python benchmarks/bench_decider_memory.py

# A real decider working through a 200k-event backlog: does its RSS follow its lag (Faust/aiokafka prefetch)?
bench-decider-backlog: venv jars
	$(BIN)/python benchmarks/bench_decider_backlog.py

bench-inference: venv jars
	$(BIN)/python benchmarks/bench_inference.py $(BENCH_ARGS)

bench-console: venv jars browser
	$(BIN)/python benchmarks/bench_console.py

kafka-up: venv jars
	$(BIN)/samtuner kafka up

kafka-down: venv
	$(BIN)/samtuner kafka down

lock: venv
	$(BIN)/pip freeze --exclude-editable | grep -v '^sam-tuner' > requirements.lock.new && mv requirements.lock.new requirements.lock

bench-trainer: venv
	$(BIN)/python benchmarks/bench_trainer.py

bench-analytics: venv
	$(BIN)/python benchmarks/bench_analytics.py

# Not in CI: `samtuner run` at 1,000 events/s offered for SOAK_MINUTES (default 30); samples the decider's
# RSS, FDs, threads, lag and p99 every minute (see benchmarks/soak.py for the other SOAK_* knobs).
soak: venv jars
	$(BIN)/python benchmarks/soak.py

# Personalization on SmolLM2-135M-Instruct (fetched on first use): 2 styles x 3 seeds, KTO, job_wall_ratio.
# Long on CPU (28.5 minutes on 2 idle cores); BENCH_QUALITY_ARGS passes options (see --help).
bench-quality: venv
	$(BIN)/python benchmarks/bench_quality.py --kto $(BENCH_QUALITY_ARGS)

clean:
	rm -rf .samtuner .pytest_cache .mypy_cache .ruff_cache
