"""The op's identity and contract-1 widths are spelled once in Python; the C++ plugin's own copy must agree.

The TensorRT plugin (plugins/trt) cannot import Python, so it spells name, version, namespace, its fields and
the accepted bit widths again: these tests parse the C++ sources (CPU only, nothing is compiled) and compare
them with ``adatsq.plugins.onnx_op`` and ``adatsq.core.contract``. A second test keeps the Python rooms from
growing new copies of the identity strings.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from adatsq.core.contract import ACT_BITS, UNQUANTIZED, WEIGHT_BITS
from adatsq.plugins import onnx_op
from adatsq.plugins.onnx_op import DOMAIN, OP_TYPE, PLUGIN_FIELDS, PLUGIN_VERSION

ROOT = Path(__file__).resolve().parents[3]
TRT = ROOT / "plugins" / "trt"


def _constant(source: str, name: str) -> str:
    m = re.search(rf"constexpr\s+char\s+const\s*\*\s*{name}\s*=\s*\"([^\"]*)\"\s*;", source)
    assert m, f'no `constexpr char const* {name} = "...";` in the plugin source'
    return m.group(1)


def _bits_accepted(source: str, field: str) -> set[int]:
    """The widths ``createPlugin`` accepts: the ``p.<field> == N`` alternatives of its validity check."""
    m = re.search(rf"\(\s*p\.{field}\s*==\s*\d+(?:\s*\|\|\s*p\.{field}\s*==\s*\d+)*\s*\)", source)
    assert m, f"no `(p.{field} == ... || ...)` check in createPlugin"
    return {int(v) for v in re.findall(rf"p\.{field}\s*==\s*(\d+)", m.group(0))}


def test_cpp_plugin_identity_equals_python() -> None:
    cpp = (TRT / "qlinear_plugin.cpp").read_text()
    header = (TRT / "qlinear_plugin.h").read_text()
    assert _constant(cpp, "kName") == OP_TYPE
    assert _constant(cpp, "kVersion") == PLUGIN_VERSION
    assert _constant(cpp, "kNamespace") == DOMAIN
    assert re.search(r"^namespace\s+(\w+)\s*\{", header, re.M).group(1) == DOMAIN
    assert header.splitlines()[0].startswith(f"// {DOMAIN}::{OP_TYPE} v{PLUGIN_VERSION} ")
    # the plugin fields: the creator's field list and the struct the node's INT attributes land in
    creator = re.search(r"for\s*\(\s*char\s+const\s*\*\s*\w+\s*:\s*\{([^}]*)\}\s*\)", cpp)
    assert creator, "no `for (char const* n : {...})` field list in QLinearPluginCreator"
    assert tuple(re.findall(r"\"(\w+)\"", creator.group(1))) == PLUGIN_FIELDS
    params = re.search(r"struct\s+QLinearParams\s*\{(.*?)\n\};", header, re.S).group(1)
    assert tuple(re.findall(r"int32_t\s+(\w+)\s*\{", params)) == PLUGIN_FIELDS
    assert re.search(r"int32_t\s+a_bits\s*\{\s*(\d+)\s*\}", params).group(1) == str(UNQUANTIZED)


def test_cpp_plugin_accepts_the_contract_widths() -> None:
    cpp = (TRT / "qlinear_plugin.cpp").read_text()
    assert _bits_accepted(cpp, "a_bits") == set(ACT_BITS)
    assert _bits_accepted(cpp, "w_bits") == set(WEIGHT_BITS)


def test_every_weight_width_has_one_format() -> None:
    from adatsq.plugins.formats import FORMATS

    assert sorted(f.bits for f in FORMATS.values()) == sorted(WEIGHT_BITS)


def test_onnx_node_carries_the_identity() -> None:
    node = onnx_op.make_qlinear_node("x", "w", "s", None, "y", k=64, a_bits=4, w_bits=4, group_size=32)
    assert (node.domain, node.op_type) == (DOMAIN, OP_TYPE)
    attrs = {a.name: a for a in node.attribute}
    assert attrs["plugin_version"].s.decode() == PLUGIN_VERSION
    assert attrs["plugin_namespace"].s.decode() == DOMAIN
    assert tuple(a for a in onnx_op.QLINEAR_ATTRIBUTES if a in PLUGIN_FIELDS) == PLUGIN_FIELDS


def _python_sources() -> list[Path]:
    rooms = ("adatsq/core", "calib", "compiler", "export", "passes", "plugins", "runtime")
    return [p for r in rooms for p in (ROOT / r).rglob("*.py") if "__pycache__" not in p.parts]


def _literals(path: Path) -> list[tuple[int, object]]:
    """(line, value) of every string constant and every all-int tuple/list/set literal of ``path``
    (docstrings excluded)."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(n.body[0].value)
        for n in ast.walk(tree)
        if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and n.body
        and isinstance(n.body[0], ast.Expr)
        and isinstance(n.body[0].value, ast.Constant)
    }
    out: list[tuple[int, object]] = []
    for n in ast.walk(tree):
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings:
            out.append((n.lineno, n.value))
        elif isinstance(n, (ast.Tuple, ast.List, ast.Set)) and n.elts:
            if all(isinstance(e, ast.Constant) and type(e.value) is int for e in n.elts):
                out.append((n.lineno, tuple(e.value for e in n.elts)))
    return out


@pytest.mark.parametrize(
    ("what", "home", "is_copy"),
    [
        ("the plugin name", "plugins/onnx_op.py", lambda v: v == OP_TYPE),
        (
            "the activation-bit set",
            "adatsq/core/contract.py",
            lambda v: v in (ACT_BITS, tuple(sorted(ACT_BITS))),
        ),
        ("the widths (3, 4, 8)", "adatsq/core/contract.py", lambda v: v == (3, 4, 8)),
    ],
)
def test_no_second_spelling_in_python(what: str, home: str, is_copy) -> None:  # noqa: ANN001
    """``"QLinear"`` as a string and ``(3, 4, 8[, 16])`` as a literal appear only in their home module."""
    found = [
        f"{p.relative_to(ROOT)}:{line}"
        for p in _python_sources()
        if p.relative_to(ROOT).as_posix() != home
        for line, value in _literals(p)
        if is_copy(value)
    ]
    assert not found, f"{what} is spelled again outside {home}: {found} (import it instead)"
