"""The quantized linear as ONE ONNX node, ``adatsq::QLinear``, and its model-local function body.

The same node is read by two consumers (DESIGN.md "Verification", reference/tensorrt.md §2.2, §7, §9a):

* TensorRT maps it to the IPluginV3 ``QLinear`` of namespace ``adatsq`` (op_type = plugin name, domain =
  plugin namespace, attributes ``plugin_version`` / ``plugin_namespace``; the other attributes become
  INT32 plugin fields).
* ONNX Runtime, Polygraphy (``--onnxrt``) and TensorRT *without* the plugin run the model-local
  FunctionProto ``adatsq.QLinear`` attached to the model, whose body is contract 1 in standard opset-21 ops.
  ONE function body serves every (a_bits, w_bits, group_size, rotate) combination: attributes enter the
  body through ``ref_attr_name`` constants, and what differs between formats is done with ``Where`` and
  index arithmetic, never with ``If`` subgraphs.

Node ``adatsq::QLinear`` (opset import ``adatsq`` version 1)
--------------------------------------------------------------
inputs (in this order)

=========  ======================================  ==================================================
x          float32 (or float16/bfloat16) [..., K]   any number of leading dims, all may be dynamic
w          UINT8 or INT8 [N, K·w_bits/8]            packed codes, exactly the bytes of
                                                   ``formats.FORMATS[...].pack`` (int4: two codes per
                                                   byte, low nibble first = ONNX INT4 raw layout;
                                                   int3: 8 codes +4 in 3 little-endian bytes; int8)
w_scale    float16 [N, K/G]                         per output channel and group
bias       float32 [N], optional                    empty input name when absent
had_m      float32 [m, m]                           ±1 Paley factor H_m ([[1]] when m = 1 or rotate=0)
had_p      float32 [p, p]                           ±1 Sylvester factor H_p ([[1]] when rotate=0)
=========  ======================================  ==================================================

output ``y``: [..., N], dtype of x.

attributes (all small; INT attributes are narrowed to int32 by the TensorRT parser)
``plugin_version`` "1", ``plugin_namespace`` "adatsq", ``a_bits`` ∈ {3, 4, 8, 16} (16 = unquantized),
``w_bits`` ∈ {3, 4, 8}, ``group_size`` = the EFFECTIVE group G along K (G if it divides K, else K),
``rotate`` ∈ {0, 1}, ``rotation_m`` = m of K = m·p (1 when K is a power of two or rotate = 0).

Decisions
---------
* **Packed weights travel as bytes, for every format.** No ONNX INT4 tensor is used: the int4 packing of
  formats.py *is* the INT4 raw layout, but TensorRT only accepts INT4 constants feeding a DequantizeLayer
  (INT4 is weight-only there), and ORT/TRT cannot bit-manipulate INT4 tensors. As bytes, one generic
  little-endian *bitstream* unpack serves int3, int4 and int8 alike (code i sits at bits
  [b·i, b·i + b) of each row, b = w_bits), the node's input dtype does not depend on the format, and the
  initializer can point into ``weights.safetensors`` unchanged (external data is raw bytes whatever the
  dtype). The function accepts UINT8 (what the int3/int4 packers return) or INT8 (int8, or any format
  re-typed for TensorRT, which handles INT8 constants more readily than UINT8).
* **Rotation matrices are node inputs** (``had_m``, ``had_p``), shared initializers named
  ``adatsq_hadamard_<n>`` (the ±1 base matrix of order n: Sylvester when n is a power of two, Paley
  otherwise), so the function stays generic in K. A rotate=0 node gets ``adatsq_hadamard_1`` = [[1]] for
  both, which makes the rotation an exact identity; the plugin reads ``rotate``/``rotation_m`` and may
  ignore these two inputs (it applies a fast Walsh–Hadamard transform instead).
* **a_bits = 16** runs through the same grouped product with q_x = x̃ and s_x = 1 (selected by ``Where``),
  which equals the reference's float x̃·(q_w⊙s_w)ᵀ up to float32 summation order (~1e-7 relative).
* **Optional bias** is materialised as ``Gemm([[1]], zeros[1, N], bias)``: Gemm's optional C is the one
  standard way to read an optional input inside a function body without ``If``.

Function body (x̃ etc. are float32; M = product of the leading dims)
--------------------------------------------------------------------
1. rotation   x̃ = ((H_mᵀ · reshape(reshape(x, [M·K/p, p]) · H_p, [M, m, K/m])) reshaped to [M, K]) / √(m·p)
              (= x·(H_m ⊗ H_p)/√K, plugins/hadamard.py ``rotate``).
2. activation per token and group of G: X_g = reshape(x̃, [M, K/G, G]); amax = ReduceMax(|X_g|, -1);
              qmax = 2^(a_bits−1) − 1; s_x = where(amax > 1e-30, amax/qmax, 1);
              q_x = Clip(Round(X_g/s_x), −qmax−1, qmax) (Round is half-to-even, like torch.round);
              a_bits = 16: q_x = X_g, s_x = 1.
3. weights    byte = (int32(w) mod 256), padded with one zero column; window_i = byte[⌊b·i/8⌋] +
              256·byte[⌊b·i/8⌋ + 1]; v_i = ⌊window_i / 2^(b·i mod 8)⌋ mod 2^b;
              q_w = ((v + t) mod 2^b) − 2^(b−1), t = 0 for int3 (offset binary) else 2^(b−1) (two's
              complement); reshaped [N, K/G, G].
4. product    D[g] = q_x[:, g, :] · q_w[:, g, :]ᵀ (exact integers in float32, one MatMul batched over g);
              y = Σ_g (D[g] ⊙ s_x[:, g]) ⊙ s_w[:, g]ᵀ  (ReduceSum over g, float32) + bias;
              reshaped to [..., N] and cast to the dtype of x.

The grouped product materialises K/G × M × N floats: fine for verification of tiny and medium models,
not a deployment path (that is the plugin).

Exporter path
-------------
:func:`export_translation_table` maps ``torch.ops.adatsq.qlinear.default`` to a plain-Python translation
that the torch 2.13 dynamo exporter calls with its ``ir.Value`` inputs and Python attribute values. It
emits the two Hadamard factors as ``Constant`` nodes and the node through ``onnxscript.values.Op`` built
on :func:`qlinear_schema` (onnxscript 0.7.2 resolves ``Opset("adatsq", 1).QLinear`` only for ops in the
global schema registry; the schema is handed to the Op instead of being registered, so the checker and
ORT still use the model-local function). Then::

    program = torch.onnx.export(model, args, dynamo=True, opset_version=21,
                                custom_translation_table=export_translation_table())
    model = finalize_exported_model(program.model_proto)

``finalize_exported_model`` shares the Hadamard factors as ``adatsq_hadamard_<n>`` initializers,
attaches the function and sets ir_version 10. The default-domain opset must be 21…24 (torch's default
is 20: pass ``opset_version``); the function body is emitted at the model's opset.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from adatsq.core.contract import ACT_BITS, UNQUANTIZED, WEIGHT_BITS
from adatsq.plugins.hadamard import hadamard_factors, paley_base
from adatsq.plugins.reference import effective_group

__all__ = [
    "DOMAIN",
    "FUNCTION_OPSET",
    "IR_VERSION",
    "OP_TYPE",
    "PLUGIN_FIELDS",
    "PLUGIN_VERSION",
    "QLINEAR_ATTRIBUTES",
    "QLINEAR_INPUTS",
    "add_qlinear_functions",
    "export_translation_table",
    "finalize_exported_model",
    "hadamard_base",
    "hadamard_initializer_name",
    "hadamard_initializers",
    "make_qlinear_model",
    "make_qlinear_node",
    "packed_weights_as_int8",
    "qlinear_attributes",
    "qlinear_function",
    "qlinear_functions",
    "qlinear_schema",
    "remove_unused_nodes",
    "rotation_inputs",
    "tap_activation_codes",
]

# The op's identity, defined here once: the ONNX node (domain, op_type) IS the TensorRT plugin (namespace,
# name, version); export/ (engine build, BUILD.json) imports these. The C++ plugin (plugins/trt) necessarily
# spells them again, and tests/unit/plugins/test_plugin_identity.py checks its strings equal these.
DOMAIN = "adatsq"  # ONNX domain = TensorRT plugin namespace
OP_TYPE = "QLinear"  # ONNX op_type = TensorRT plugin name
PLUGIN_VERSION = "1"
DOMAIN_VERSION = 1
FUNCTION_OPSET = 21  # lowest default-domain opset of the body (INT4-era ops; reference/tensorrt.md §1.4)
MAX_OPSET = 24  # highest opset the TensorRT 10.15 parser reads
IR_VERSION = 10  # ORT 1.31 rejects onnx 1.23's default ir_version 14

QLINEAR_INPUTS = ("x", "w", "w_scale", "bias", "had_m", "had_p")
QLINEAR_ATTRIBUTES = (
    "plugin_version",
    "plugin_namespace",
    "a_bits",
    "w_bits",
    "group_size",
    "rotate",
    "rotation_m",
)
#: The attributes that reach the plugin as INT32 fields (all but the two identity strings).
PLUGIN_FIELDS = tuple(a for a in QLINEAR_ATTRIBUTES if a not in ("plugin_version", "plugin_namespace"))
OFFSET_BINARY_WEIGHT_BITS = 3  # formats.py: int3 codes are stored +4; int4/int8 are two's complement
_TINY = 1e-30


# ---------------------------------------------------------------- Hadamard factors as initializers


def hadamard_base(n: int) -> np.ndarray:
    """The ±1 Hadamard base matrix of order n as float32: Sylvester for a power of two, else Paley."""
    if n >= 1 and n & (n - 1) == 0:
        h = np.ones((1, 1), dtype=np.float32)
        while h.shape[0] < n:
            h = np.block([[h, h], [h, -h]])
        return h.astype(np.float32)
    return paley_base(n).numpy().astype(np.float32)


def hadamard_initializer_name(n: int) -> str:
    """Shared initializer name of :func:`hadamard_base` ``(n)``; one per order in a model."""
    return f"adatsq_hadamard_{n}"


def rotation_inputs(k: int, rotate: bool) -> tuple[int, int, int]:
    """(rotation_m, m, p) for a layer of width K: R = (H_m ⊗ H_p)/√K, or m = p = 1 without rotation."""
    if not rotate:
        return 1, 1, 1
    m, p = hadamard_factors(k)
    return m, m, p


def _hadamard_tensor(n: int) -> TensorProto:
    return numpy_helper.from_array(hadamard_base(n), hadamard_initializer_name(n))


# ---------------------------------------------------------------- the function body


class _Body:
    """Accumulates the nodes of a function body with unique, readable value names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self._count = 0

    def __call__(self, op: str, *inputs: str, name: str | None = None, **attrs: Any) -> str:
        self._count += 1
        out = name or f"{op.lower()}_{self._count}"
        self.nodes.append(helper.make_node(op, list(inputs), [out], **attrs))
        return out

    def const(self, name: str, value: np.ndarray) -> str:
        return self("Constant", name=name, value=numpy_helper.from_array(np.asarray(value), name))

    def attr_int(self, name: str, attr: str) -> str:
        """int64 scalar holding the call site's INT attribute ``attr``."""
        node = helper.make_node("Constant", [], [name])
        node.attribute.append(helper.make_attribute_ref("value_int", onnx.AttributeProto.INT))
        node.attribute[-1].ref_attr_name = attr
        self.nodes.append(node)
        return name


def _body_nodes(b: _Body) -> None:
    """Emit contract 1 (see the module docstring for the math) reading inputs x, w, w_scale, bias,
    had_m, had_p and writing ``y``; the activation codes are the value ``x_codes``."""
    i64 = lambda v: np.asarray(v, dtype=np.int64)  # noqa: E731
    f32 = lambda v: np.asarray(v, dtype=np.float32)  # noqa: E731
    minus1 = b.const("c_minus1", i64([-1]))
    one_i = b.const("c_one_i64", i64([1]))

    # attributes
    a_bits = b.attr_int("a_bits_i", "a_bits")
    w_bits = b("Reshape", b.attr_int("w_bits_i", "w_bits"), one_i, name="w_bits_1d")
    group = b("Reshape", b.attr_int("group_i", "group_size"), one_i, name="group_1d")

    # shapes
    x32 = b("Cast", "x", name="x_f32", to=TensorProto.FLOAT)
    lead = b("Shape", "x", name="lead_shape", end=-1)
    k = b("Shape", "x", name="k_1d", start=-1)
    n = b("Shape", "w_scale", name="n_1d", start=0, end=1)
    m = b("Shape", "had_m", name="m_1d", start=0, end=1)
    p = b("Shape", "had_p", name="p_1d", start=0, end=1)

    # 1. rotation x̃ = x·(H_m ⊗ H_p)/√(m·p)
    rows_p = b("Reshape", x32, b("Concat", minus1, p, axis=0), name="x_rows_p")
    xp = b("MatMul", rows_p, "had_p", name="x_hp")
    k_over_m = b("Div", k, m, name="k_over_m")
    x_m = b("Reshape", xp, b("Concat", minus1, m, k_over_m, axis=0), name="x_by_m")
    xmm = b("MatMul", b("Transpose", "had_m", perm=[1, 0]), x_m, name="x_hm")
    norm = b("Sqrt", b("Cast", b("Mul", m, p), to=TensorProto.FLOAT), name="rot_norm")
    ng = b("Div", k, group, name="n_groups_1d")
    grouped_shape = b("Concat", minus1, ng, group, axis=0, name="grouped_shape")
    x_rot = b("Div", b("Reshape", xmm, grouped_shape), norm, name="x_rot_grouped")  # [M, K/G, G]

    # 2. per-token, per-group activation quantization
    absmax = b("ReduceMax", b("Abs", x_rot), minus1, name="x_absmax", keepdims=1)  # [M, K/G, 1]
    bits_f = b("Cast", b("Sub", a_bits, b.const("c_one_scalar", i64(1))), to=TensorProto.FLOAT)
    qmax = b("Sub", b("Pow", b.const("c_two_f", f32(2.0)), bits_f), b.const("c_one_f", f32(1.0)), name="qmax")
    one_f = "c_one_f"
    scale = b(
        "Where",
        b("Greater", absmax, b.const("c_tiny", f32(_TINY))),
        b("Div", absmax, qmax),
        one_f,
        name="x_scale_q",
    )
    qmin = b("Sub", b("Neg", qmax), one_f, name="qmin")
    codes = b("Clip", b("Round", b("Div", x_rot, scale)), qmin, qmax, name="x_codes")
    quantized = b("Less", a_bits, b.const("c_sixteen", i64(UNQUANTIZED)), name="is_quantized")
    q_x = b("Where", quantized, codes, x_rot, name="q_x")
    s_x = b("Where", quantized, scale, one_f, name="s_x")

    # 3. weight unpack: little-endian bitstream of b-bit codes per row
    byte = b("Mod", b("Cast", "w", to=TensorProto.INT32), b.const("c_256", np.asarray(256, np.int32)), fmod=0)
    byte = b("Pad", byte, b.const("c_pad_col", i64([0, 0, 0, 1])), name="w_bytes")  # [N, bytes + 1]
    k_scalar = b("Squeeze", k, name="k_scalar")
    bit = b("Mul", b("Range", b.const("c_zero_s", i64(0)), k_scalar, b.const("c_one_s", i64(1))), w_bits)
    byte_idx = b("Div", bit, b.const("c_eight", i64(8)), name="w_byte_idx")
    pow2 = b.const("c_pow2", np.asarray([1 << i for i in range(9)], np.int32))
    shift_div = b("Gather", pow2, b("Mod", bit, "c_eight"), axis=0, name="w_shift_div")
    lo = b("Gather", byte, byte_idx, axis=1)
    hi = b("Gather", byte, b("Add", byte_idx, "c_one_s"), axis=1)
    window = b("Add", lo, b("Mul", hi, "c_256"), name="w_window")
    levels = b("Gather", pow2, w_bits, axis=0, name="w_levels")  # [1]: 2^b
    half = b("Gather", pow2, b("Sub", w_bits, one_i), axis=0, name="w_half")  # [1]: 2^(b-1)
    v = b("Mod", b("Div", window, shift_div), levels, fmod=0, name="w_field")
    offset_binary = b("Equal", w_bits, b.const("c_offset_bits", i64([OFFSET_BINARY_WEIGHT_BITS])))
    t = b("Where", offset_binary, b.const("c_zero_i32", np.asarray(0, np.int32)), half)
    q_w = b("Sub", b("Mod", b("Add", v, t), levels, fmod=0), half, name="w_codes")  # int32 [N, K]
    q_w = b("Reshape", b("Cast", q_w, to=TensorProto.FLOAT), b("Concat", n, ng, group, axis=0))

    # 4. grouped integer products, scales, sum over groups, bias
    dots = b(
        "MatMul",
        b("Transpose", q_x, perm=[1, 0, 2]),  # [K/G, M, G]
        b("Transpose", q_w, perm=[1, 2, 0]),  # [K/G, G, N]
        name="group_dots",
    )
    s_w = b("Unsqueeze", b("Transpose", b("Cast", "w_scale", to=TensorProto.FLOAT), perm=[1, 0]), one_i)
    scaled = b("Mul", b("Mul", dots, b("Transpose", s_x, perm=[1, 0, 2])), s_w, name="group_terms")
    y2 = b("ReduceSum", scaled, b.const("c_zero_1d", i64([0])), keepdims=0, name="y_nobias")  # [M, N]
    zeros_1n = b(
        "ConstantOfShape",
        b("Concat", one_i, n, axis=0),
        value=numpy_helper.from_array(np.zeros(1, np.float32), "zero"),
    )
    bias_row = b("Gemm", b.const("c_one_11", f32([[1.0]])), zeros_1n, "bias", name="bias_or_zero")
    y2 = b("Add", y2, bias_row, name="y_flat")
    b("CastLike", b("Reshape", y2, b("Concat", lead, n, axis=0)), "x", name="y")


def _opset_imports(opset: int) -> list[onnx.OperatorSetIdProto]:
    return [helper.make_opsetid("", opset)]


def qlinear_function(opset: int = FUNCTION_OPSET, outputs: Sequence[str] = ("y",)) -> onnx.FunctionProto:
    """The FunctionProto ``adatsq.QLinear`` at default-domain ``opset`` (21…24).

    ``outputs`` other than ``("y",)`` give debug variants exposing intermediate values of the SAME body
    (e.g. ``("y", "x_codes", "x_scale_q")``); such variants are for tests and must not be shipped.
    """
    if not FUNCTION_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"QLinear function body needs default-domain opset {FUNCTION_OPSET}…{MAX_OPSET}")
    body = _Body()
    _body_nodes(body)
    return helper.make_function(
        DOMAIN,
        OP_TYPE,
        list(QLINEAR_INPUTS),
        list(outputs),
        body.nodes,
        _opset_imports(opset),
        attributes=list(QLINEAR_ATTRIBUTES),
        doc_string="adatsq quantized linear, DESIGN.md contract 1; see adatsq.plugins.onnx_op",
    )


def qlinear_functions(opset: int = FUNCTION_OPSET) -> list[onnx.FunctionProto]:
    """Every model-local function a graph with QLinear nodes needs (today: the one QLinear body)."""
    return [qlinear_function(opset)]


def _default_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    return FUNCTION_OPSET


def add_qlinear_functions(
    model: onnx.ModelProto, functions: Sequence[onnx.FunctionProto] | None = None
) -> onnx.ModelProto:
    """Attach the QLinear function(s) and the ``adatsq`` opset import to ``model`` in place (idempotent).

    The function body is emitted at the model's default-domain opset (which must be 21…24), because the
    checker requires a function's opset imports to agree with the model's. Sets ``ir_version`` to 10.
    """
    opset = _default_opset(model)
    if not any(imp.domain in ("", "ai.onnx") for imp in model.opset_import):
        model.opset_import.append(helper.make_opsetid("", opset))
    functions = list(functions) if functions is not None else qlinear_functions(opset)
    kept = [f for f in model.functions if (f.domain, f.name) not in {(g.domain, g.name) for g in functions}]
    del model.functions[:]
    model.functions.extend(kept + functions)
    if not any(imp.domain == DOMAIN for imp in model.opset_import):
        model.opset_import.append(helper.make_opsetid(DOMAIN, DOMAIN_VERSION))
    model.ir_version = IR_VERSION
    return model


# ---------------------------------------------------------------- building nodes and models


def qlinear_attributes(
    *, a_bits: int, w_bits: int, group_size: int, k: int, rotate: bool
) -> dict[str, int | str]:
    """Validated attributes of one QLinear node; ``group_size`` is the requested G (made effective here)."""
    if a_bits not in ACT_BITS:
        raise ValueError(f"a_bits must be one of {ACT_BITS}, got {a_bits}")
    if w_bits not in WEIGHT_BITS:
        raise ValueError(f"w_bits must be one of {WEIGHT_BITS}, got {w_bits}")
    if k * w_bits % 8:
        raise ValueError(f"K={k} does not fill whole bytes at {w_bits} bits")
    g = effective_group(k, group_size)
    rotation_m, _, _ = rotation_inputs(k, rotate)
    return {
        "plugin_version": PLUGIN_VERSION,
        "plugin_namespace": DOMAIN,
        "a_bits": int(a_bits),
        "w_bits": int(w_bits),
        "group_size": int(g),
        "rotate": int(bool(rotate)),
        "rotation_m": int(rotation_m),
    }


def make_qlinear_node(
    x: str,
    w: str,
    w_scale: str,
    bias: str | None,
    y: str,
    *,
    k: int,
    a_bits: int,
    w_bits: int,
    group_size: int,
    rotate: bool = True,
    name: str | None = None,
) -> onnx.NodeProto:
    """One ``adatsq::QLinear`` node; its ``had_m``/``had_p`` inputs are the shared initializers named
    :func:`hadamard_initializer_name` (add them with :func:`hadamard_initializers`)."""
    attrs = qlinear_attributes(a_bits=a_bits, w_bits=w_bits, group_size=group_size, k=k, rotate=rotate)
    _, m, p = rotation_inputs(k, rotate)
    inputs = [x, w, w_scale, bias or "", hadamard_initializer_name(m), hadamard_initializer_name(p)]
    return helper.make_node(OP_TYPE, inputs, [y], name=name, domain=DOMAIN, **attrs)


def hadamard_initializers(nodes: Sequence[onnx.NodeProto]) -> list[TensorProto]:
    """The ``adatsq_hadamard_<n>`` initializers the QLinear ``nodes`` read, each once."""
    orders: set[int] = set()
    for node in nodes:
        if node.domain == DOMAIN and node.op_type == OP_TYPE:
            for name in node.input[4:6]:
                orders.add(int(name.rsplit("_", 1)[1]))
    return [_hadamard_tensor(n) for n in sorted(orders)]


def make_qlinear_model(
    w_packed: np.ndarray,
    w_scale: np.ndarray,
    bias: np.ndarray | None,
    *,
    k: int,
    a_bits: int,
    w_bits: int,
    group_size: int,
    rotate: bool = True,
    x_shape: Sequence[int | str] = ("tokens", "K"),
    x_dtype: int = TensorProto.FLOAT,
    functions: Sequence[onnx.FunctionProto] | None = None,
    extra_outputs: Sequence[tuple[str, int]] = (),
) -> onnx.ModelProto:
    """A single-node model ``y = QLinear(x)`` with the weights as initializers (tests, golden files).

    ``x_shape`` may use strings for dynamic dims; its last entry is replaced by K. ``extra_outputs``
    ((name, elem_type) pairs) name additional outputs of a debug ``functions`` variant.
    """
    n = w_scale.shape[0]
    node = make_qlinear_node(
        "x", "w", "w_scale", None if bias is None else "bias", "y",
        k=k, a_bits=a_bits, w_bits=w_bits, group_size=group_size, rotate=rotate, name="qlinear",
    )  # fmt: skip
    for extra, _ in extra_outputs:
        node.output.append(extra)
    inits = [
        numpy_helper.from_array(np.ascontiguousarray(w_packed), "w"),
        numpy_helper.from_array(np.ascontiguousarray(w_scale.astype(np.float16)), "w_scale"),
    ]
    if bias is not None:
        inits.append(numpy_helper.from_array(bias.astype(np.float32), "bias"))
    inits += hadamard_initializers([node])
    shape = [*x_shape[:-1], k]
    out_shape = [*x_shape[:-1], n]
    graph = helper.make_graph(
        [node],
        "qlinear",
        [helper.make_tensor_value_info("x", x_dtype, shape)],
        [helper.make_tensor_value_info("y", x_dtype, out_shape)]
        + [helper.make_tensor_value_info(e, t, None) for e, t in extra_outputs],
        initializer=inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", FUNCTION_OPSET), helper.make_opsetid(DOMAIN, DOMAIN_VERSION)],
        ir_version=IR_VERSION,
        producer_name="adatsq",
    )
    return add_qlinear_functions(model, functions)


# ---------------------------------------------------------------- torch dynamo exporter


def qlinear_schema() -> onnx.defs.OpSchema:
    """An (unregistered) OpSchema of ``adatsq::QLinear``, for onnxscript callers; never registered
    globally, so the checker and ORT keep resolving the node through the model-local function."""
    s = onnx.defs.OpSchema
    param = s.FormalParameter
    opt = s.FormalParameterOption.Optional
    attr_types = {"plugin_version": s.AttrType.STRING, "plugin_namespace": s.AttrType.STRING}
    return s(
        OP_TYPE,
        DOMAIN,
        DOMAIN_VERSION,
        "adatsq quantized linear (see adatsq.plugins.onnx_op)",
        inputs=[
            param("x", "T"),
            param("w", "TW"),
            param("w_scale", "TS"),
            param("bias", "TF", param_option=opt),
            param("had_m", "TF"),
            param("had_p", "TF"),
        ],
        outputs=[param("y", "T")],
        type_constraints=[
            ("T", ["tensor(float)", "tensor(float16)", "tensor(bfloat16)"], "activations"),
            ("TW", ["tensor(uint8)", "tensor(int8)"], "packed weight bytes"),
            ("TS", ["tensor(float16)"], "weight scales"),
            ("TF", ["tensor(float)"], "bias and Hadamard factors"),
        ],
        attributes=[s.Attribute(a, attr_types.get(a, s.AttrType.INT), "") for a in QLINEAR_ATTRIBUTES],
    )


def _translate_qlinear(
    x: Any,
    w_packed: Any,
    w_scale: Any,
    bias: Any,
    a_bits: int,
    w_bits: int,
    group_size: int,
    rotate: bool,
) -> Any:
    """onnxscript translation of ``torch.ops.adatsq.qlinear``: one ``adatsq::QLinear`` node.

    The Hadamard factors are emitted as Constant nodes; :func:`finalize_exported_model` replaces them by
    the shared ``adatsq_hadamard_<n>`` initializers.
    """
    import onnx_ir as ir
    import onnxscript

    k = int(x.shape[-1])
    attrs = qlinear_attributes(
        a_bits=int(a_bits), w_bits=int(w_bits), group_size=int(group_size), k=k, rotate=bool(rotate)
    )
    _, m, p = rotation_inputs(k, bool(rotate))
    std = onnxscript.values.Opset("", FUNCTION_OPSET)
    had_m = std.Constant(value=ir.tensor(hadamard_base(m), name=hadamard_initializer_name(m)))
    had_p = std.Constant(value=ir.tensor(hadamard_base(p), name=hadamard_initializer_name(p)))
    qlinear = onnxscript.values.Op(onnxscript.values.Opset(DOMAIN, DOMAIN_VERSION), OP_TYPE, qlinear_schema())
    return qlinear(x, w_packed, w_scale, bias, had_m, had_p, **attrs)


def export_translation_table() -> dict[Callable[..., Any], Callable[..., Any]]:
    """``custom_translation_table`` for ``torch.onnx.export(..., dynamo=True)``."""
    import torch

    import adatsq.plugins.op  # noqa: F401  (registers torch.ops.adatsq.qlinear)

    return {torch.ops.adatsq.qlinear.default: _translate_qlinear}


def packed_weights_as_int8(model: onnx.ModelProto) -> onnx.ModelProto:
    """Re-type every UINT8 initializer feeding a QLinear ``w`` input to INT8, same bytes, in place.

    For TensorRT, whose UINT8 support is narrower than INT8's; the function body reads both alike.
    Works on external-data initializers too (only ``data_type`` changes).
    """
    weight_names = {
        node.input[1] for node in model.graph.node if node.domain == DOMAIN and node.op_type == OP_TYPE
    }
    for init in model.graph.initializer:
        if init.name in weight_names and init.data_type == TensorProto.UINT8:
            if init.int32_data:  # non-raw storage: one int32 per byte
                init.int32_data[:] = [v - 256 if v > 127 else v for v in init.int32_data]
            init.data_type = TensorProto.INT8
    return model


def finalize_exported_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """Make an exported graph with QLinear nodes self-contained, in place.

    Replaces each QLinear node's Hadamard inputs (Constant nodes or initializers, whatever the exporter
    made of them) by the shared ``adatsq_hadamard_<n>`` initializers after checking their values, drops
    what became unused, attaches the functions and sets ``ir_version`` 10.
    """
    graph = model.graph
    producers = {o: node for node in graph.node for o in node.output}
    inits = {t.name: t for t in graph.initializer}
    wanted: dict[str, TensorProto] = {}
    for node in graph.node:
        if node.domain != DOMAIN or node.op_type != OP_TYPE:
            continue
        for slot in (4, 5):
            src = node.input[slot]
            if src in inits:
                value = numpy_helper.to_array(inits[src])
            elif src in producers and producers[src].op_type == "Constant":
                value = numpy_helper.to_array(helper.get_attribute_value(producers[src].attribute[0]))
            else:
                continue
            order = value.shape[0]
            if value.shape != (order, order) or not np.array_equal(value, hadamard_base(order)):
                raise ValueError(
                    f"QLinear {node.name!r}: input {slot} is not the Hadamard base of order {order}"
                )
            canon = hadamard_initializer_name(order)
            wanted.setdefault(canon, _hadamard_tensor(order))
            node.input[slot] = canon
    for init in list(graph.initializer):
        if init.name in wanted:  # replaced by the canonical tensor
            graph.initializer.remove(init)
    graph.initializer.extend(wanted.values())
    remove_unused_nodes(model)
    return add_qlinear_functions(model)


def remove_unused_nodes(model: onnx.ModelProto) -> bool:
    """Drop dead nodes (graph, subgraphs, model-local functions) and unused initializers in place, with
    onnx-ir's ``RemoveUnusedNodesPass``; True when something was removed (the model is then rewritten from
    the ``onnx_ir.Model``, which records a ``value_info`` for every initializer; otherwise it is untouched)."""
    import onnx_ir as ir
    from onnx_ir.passes.common import RemoveUnusedNodesPass

    ir_model = ir.from_proto(model)
    if not RemoveUnusedNodesPass()(ir_model).modified:
        return False
    model.CopyFrom(ir.to_proto(ir_model))
    return True


def tap_activation_codes(
    model: onnx.ModelProto,
) -> tuple[onnx.ModelProto, dict[str, tuple[str, str, int, int]]]:
    """A debug copy of ``model`` whose graph also outputs, for every activation-quantized QLinear node (a_bits
    < 16), its input x and its activation codes (the SAME function body with the extra output ``x_codes``).

    Returns the copy and node name → (input value name, codes value name, a_bits, group_size). For tests and
    debugging only; never ship such a graph. External data references are kept (load it next to the weights).
    """
    m = onnx.ModelProto()
    m.CopyFrom(model)
    add_qlinear_functions(m, [qlinear_function(_default_opset(m), outputs=("y", "x_codes"))])
    outputs = {o.name for o in m.graph.output}
    taps: dict[str, tuple[str, str, int, int]] = {}
    for node in m.graph.node:
        if node.domain != DOMAIN or node.op_type != OP_TYPE:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs["a_bits"] >= UNQUANTIZED:
            node.output.append("")
            continue
        codes = f"{node.name or node.output[0]}::codes"
        node.output.append(codes)
        taps[node.name or node.output[0]] = (
            node.input[0],
            codes,
            int(attrs["a_bits"]),
            int(attrs["group_size"]),
        )
        for name in (node.input[0], codes):
            if name not in outputs:
                m.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
                outputs.add(name)
    return m, taps
