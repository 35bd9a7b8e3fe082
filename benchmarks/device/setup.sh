# The device recipe (the GPU machine of the tool library; BENCHMARKS.md's GPU rows were made with it).
# Here, before a call: the wheels in .whl (diffusers 0.42.1, importlib_metadata, nvidia-cutlass 4.2.0.0; see the
# device README's Notes), the project as a wheel and the TensorRT headers in .devrun (both git-ignored):
#   python3 -m pip wheel --no-deps --no-build-isolation --no-index -w .devrun . && cp -r ../tensorrt .devrun/
# The call (carry [".whl", ".devrun"]): `source benchmarks/device/setup.sh`, then start a chain detached, so it
# outlives the call and the next call (within the 30 s the machine stays warm) only waits for it:
#   T0=$(date +%s); source benchmarks/device/setup.sh
#   (setsid nohup bash benchmarks/device/chain_next.sh > /tmp/chain.out 2>&1 < /dev/null &)
#   bash benchmarks/device/wait.sh $(( T0 + 560 ))   # then $OUT/res.tgz holds /tmp/res (logs, JSON)
# with the call's timeout_s at 600: the deadline counts from the call's start, so the setup's minutes (pip, the
# kernel build) cannot push the wait past the limit, where nothing would come back. The next calls only wait:
# `bash benchmarks/device/wait.sh 560`.
# source from the repo root: wheels into /tmp/site, the project into /tmp/adq, the kernel library into /tmp/kb
set -e
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/adq .devrun/adatsq-*.whl
source benchmarks/device/env.sh
mkdir -p /tmp/res
nvidia-smi > /tmp/res/gpu.txt
python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name())" >> /tmp/res/gpu.txt
t0=$(date +%s); python3 -c "from adatsq.plugins.kernels import cuda_lib; cuda_lib.lib()"; echo "kernel build $(( $(date +%s)-t0 )) s" >> /tmp/res/gpu.txt
set +e
