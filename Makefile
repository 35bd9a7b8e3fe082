# The interface of the repository: every workflow is one of these targets.
PY ?= python3
OUT ?= engines/tiny-flux

.PHONY: install demo test test-unit test-e2e test-gpu lint format bench clean

install:  ## install adatsq (editable) with its dev tools; torch 2.13.0 CPU build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"

demo:  ## tiny end-to-end compile + engine-switching generation on the CPU
	adatsq-compile tiny-flux --target 3.1 -o $(OUT)
	adatsq-run $(OUT) --backend ort --seed 0

test:  ## the CPU suite (unit + e2e); what CI runs
	$(PY) -m pytest tests/unit tests/e2e -q -m "not gpu"

test-unit:
	$(PY) -m pytest tests/unit -q

test-e2e:
	$(PY) -m pytest tests/e2e -q

test-gpu:  ## kernels and full-size models; needs a Hopper GPU
	$(PY) -m pytest tests/gpu -q

lint:
	ruff check .
	ruff format --check .

format:
	ruff check --fix .
	ruff format .

bench:  ## GPU benchmarks; writes JSON under benchmarks/results/
	$(PY) -m benchmarks.bench_qlinear --out benchmarks/results/qlinear.json

clean:
	rm -rf build *.egg-info engines .pytest_cache
