"""ExternalizeWeightsPass: every parameter comes from the weight file; a large inline initializer is an error
unless the caller names it as one of the model's computed constants (non-persistent buffers, export's
``model_constants``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from safetensors.torch import save_file

from adatsq.core.models import get_spec, load_transformer
from adatsq.export.onnx_export import PREFIX, model_constants
from adatsq.passes.base import PassConditionError
from adatsq.passes.onnx import ExternalizeWeightsPass


def _graph(table: np.ndarray, w: np.ndarray) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4])
    nodes = [
        helper.make_node("MatMul", ["x", "model.w"], ["h"]),
        helper.make_node("Add", ["h", "model.table"], ["y"]),
    ]
    inits = [numpy_helper.from_array(w, "model.w"), numpy_helper.from_array(table, "model.table")]
    return helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits))


def test_named_constants_stay_inline_and_others_fail(tmp_path: Path) -> None:
    w = np.arange(16, dtype=np.float32).reshape(4, 4)
    table = np.ones((4, 4), dtype=np.float32)  # 64 bytes, above the limit below, in no weight file
    weights = tmp_path / "weights.safetensors"
    save_file({"w": torch.from_numpy(w)}, str(weights))
    with pytest.raises(PassConditionError, match="model.table .* not in weights.safetensors"):
        ExternalizeWeightsPass(weights, max_inline_bytes=16)(_graph(table, w))
    model = _graph(table, w)
    ExternalizeWeightsPass(weights, max_inline_bytes=16, constants={"model.table"})(model)
    by_name = {t.name: t for t in model.graph.initializer}
    assert by_name["model.w"].data_location == TensorProto.EXTERNAL
    assert by_name["model.table"].data_location != TensorProto.EXTERNAL
    assert np.array_equal(numpy_helper.to_array(by_name["model.table"]), table)


def test_model_constants_are_the_non_persistent_buffers() -> None:
    wan = load_transformer(get_spec("tiny-wan"))
    assert {PREFIX + "rope.freqs_cos", PREFIX + "rope.freqs_sin"} <= model_constants(wan)
    state = {PREFIX + k for k in wan.state_dict()}
    assert not model_constants(wan) & state  # never a parameter or a checkpoint buffer
