# source from the repo root on the device machine
export PYTHONPATH=/tmp/adq:/tmp/site PATH=/tmp/adq/bin:$PATH ADATSQ_KERNELS_BUILD=/tmp/kb PYTHONUNBUFFERED=1
export TENSORRT_ROOT=$PWD/.devrun/tensorrt
