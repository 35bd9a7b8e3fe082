# The interface of the repository: every workflow is one of these targets.
PY ?= python3
OUT ?= engines/tiny-flux
PYTEST ?= $(PY) -m pytest

.PHONY: install demo test test-unit test-e2e test-gpu gpu-fixture lint format bench bench-compile bench-e2e quality quality-full demo-quality triton-server cpp cpp-gpu plugin-check check-trt-full clean

# editable_mode=strict: the install is a tree of links, build/__editable__.adatsq-*/adatsq/..., that editors and
# type checkers (pyright, Pylance, mypy) can read; the default mode maps compiler/ -> adatsq.compiler etc. with an
# import hook that only the interpreter runs. The links are made at install time, so after adding, renaming or
# removing a module (or a package data file) run `make install` again; `make clean` keeps the link tree.
# Python started in the repository root finds the bare adatsq/ folder first; adatsq/__init__.py extends its
# __path__ to the link tree's, so adatsq.compiler still imports there.
install:  ## install adatsq (editable) with its dev tools; torch 2.13.0 CPU build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]" --config-settings editable_mode=strict
	$(PY) -m pip install -q --no-deps nvidia-cutlass==4.2.0.0  # CUTLASS headers for plugins/csrc (no GPU needed)

demo:  ## tiny end-to-end compile + engine-switching generation on the CPU
	adatsq-compile tiny-flux --target 3.1 -o $(OUT)
	adatsq-run $(OUT) --backend ort --seed 0

test:  ## the CPU suite (unit + e2e); what CI runs
	$(PYTEST) tests/unit tests/e2e -q -m "not gpu"

test-unit:
	$(PYTEST) tests/unit -q

test-e2e:
	$(PYTEST) tests/e2e -q

gpu-fixture:  ## the compiled medium Flux the GPU runner test uses (CPU, ~1 min)
	test -f gpu_fixture/medium-flux/schedule.json || $(PY) tests/gpu/make_fixture.py gpu_fixture/medium-flux

test-gpu: gpu-fixture  ## kernels and the runner's torch backend on the GPU; needs a Hopper GPU
	$(PYTEST) tests/gpu -q

lint:
	ruff check .
	ruff format --check .

format:
	ruff check --fix .
	ruff format .

bench:  ## GPU benchmarks; writes JSON under benchmarks/results/
	$(PY) benchmarks/bench_qlinear.py --out benchmarks/results
	$(PY) benchmarks/bench_weight_only.py --out benchmarks/results
	$(PY) benchmarks/bench_act.py --out benchmarks/results

bench-compile:  ## the whole compile of random-weight Flux-dev on the GPU, per stage (reduced sizes; BENCHMARKS.md)
	$(PY) benchmarks/bench_compile_gpu.py --out /tmp/adatsq-bench/flux-dev --run-steps -- flux-dev --target 3.1 \
		--steps 4 --calib-samples 2 --search-samples 1 --resolution 1024 1024

# The schedule of the W3A3.1 loop: `make bench-compile` writes it; the run resumes (finished variants are kept
# in the JSON), so repeat the command until it no longer says its time budget is spent.
SCHED ?= /tmp/adatsq-bench/flux-dev
bench-e2e:  ## whole-step bf16 / FP8 / ours per model on the GPU: one table + JSON (issue 13)
	$(PY) benchmarks/bench_e2e.py --models flux-dev,z-image,wan2.1-1.3b --schedule-dir $(SCHED) \
		--out benchmarks/results/bench_e2e.json --time-budget 480

quality:  ## the quality table on the CPU (quick settings): shapes-flux at 4.0 and 3.1 bits, every ablation
	$(PY) benchmarks/quality.py --quick --out benchmarks/results/quality_quick.json

demo-quality:  ## shapes-flux at 3.1 bits: FP and quantized samples side by side with the detector's verdicts
	$(PY) benchmarks/quality.py --quick --targets 3.1 --rows adatsq --methods "" --out /tmp/adatsq-demo-quality.json \
		--force --grid engines/shapes-flux-quality.png

quality-full:  ## the full quality table on the GPU
	$(PY) benchmarks/quality.py --device cuda --jobs 8 --out benchmarks/results/quality_full.json

triton-server:  ## tritonserver 2.51 (nvidia-pytriton 0.7.0, python backend) + tritonclient into build/triton (~8 s)
	$(PY) tests/helpers/triton_server.py install

# TensorRT's public headers (NVIDIA/TensorRT include/, fetched beside the checkout, never committed)
TENSORRT_ROOT ?= $(abspath ../tensorrt)
cpp:  ## C++ runtime: build + CPU ctest (the TensorRT runner only where $(TENSORRT_ROOT)/include exists)
	cmake -S runtime/cpp -B runtime/cpp/build -DTENSORRT_ROOT=$(TENSORRT_ROOT)
	cmake --build runtime/cpp/build -j2
	ctest --test-dir runtime/cpp/build -LE gpu --output-on-failure

cpp-gpu: cpp  ## the C++ runner's CUDA Euler kernel against the CPU reference (needs a GPU)
	ctest --test-dir runtime/cpp/build -L gpu --output-on-failure

plugin-check:  ## the TensorRT plugin sources against the TensorRT headers, without the kernels (seconds)
	cmake -S plugins/trt -B plugins/trt/build/check -DTENSORRT_ROOT=$(TENSORRT_ROOT) -DADATSQ_LINK_KERNELS=OFF
	cmake --build plugins/trt/build/check -j2

check-trt-full:  ## full-size Flux-dev TensorRT twins through the static parser check (CPU, ~4 min, 4.7 GB temp)
	$(PY) benchmarks/check_trt_full.py --json benchmarks/results/check_trt_full.json

clean:
	rm -rf build/lib build/bdist.* *.egg-info engines .pytest_cache  # not build/__editable__.*: the install
