"""adatsq per-configuration model of the CPU repository (Triton python backend): one ONNX graph in ONNX Runtime.

Copied by adatsq (export/triton.py) to ``<out>/triton_cpu/adatsq_config_NN/1/model.py``. The graph is the
compile's own ``onnx/config_NN.onnx`` (config.pbtxt parameter ``onnx_graph``, relative to the model folder),
which reads its weights from ``onnx/weights.safetensors`` as external data: the graph the runner's ``ort``
backend runs, on the CPU execution provider. ``ADATSQ_ORT_THREADS`` (an integer; unset: ONNX Runtime's
default) sets the intra-op thread count exactly as the runner does.

Outputs: the graph's output and ``adatsq_config_id`` (INT32 [1], this model's configuration, parameter
``config_id``), so that a caller can check which configuration answered. Tensors cross the stub as DLPack
(see denoiser.py for why not ``as_numpy()``).
"""

import json
import os
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

IDENTITY_OUTPUT = "adatsq_config_id"


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        path = os.path.normpath(os.path.join(args["model_repository"], params["onnx_graph"]))
        if not os.path.isfile(path):
            raise pb_utils.TritonModelException(f"ONNX graph {path} is missing")
        self.config_id = int(params["config_id"])
        self.output = params["output"]
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        threads = os.environ.get("ADATSQ_ORT_THREADS", "").strip()
        if threads:
            opts.intra_op_num_threads = int(threads)
        self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            feeds = {}
            missing = []
            for name in self.inputs:
                t = pb_utils.get_input_tensor_by_name(request, name)
                if t is None:
                    missing.append(name)
                else:
                    feeds[name] = np.from_dlpack(t)
            if missing:
                error = pb_utils.TritonError(f"request lacks graph input(s) {', '.join(missing)}")
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
                continue
            y = self.session.run([self.output], feeds)[0]
            identity = np.asarray([self.config_id], dtype=np.int32)
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor.from_dlpack(self.output, np.ascontiguousarray(y)),
                        pb_utils.Tensor.from_dlpack(IDENTITY_OUTPUT, identity),
                    ]
                )
            )
        return responses

    def finalize(self) -> None:
        self.session = None
