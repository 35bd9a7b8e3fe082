"""The trained shapes-flux compiles end to end like the other models: its graphs are Flux's (the shapes family
is Flux's calling convention on pixel latents), certified golden in ONNX Runtime against the torch reference,
and the package stage writes the report with the trained model's Fisher heatmap and per-step errors."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from helpers.golden import assert_golden_flux

from adatsq.compiler.cli import main
from adatsq.core.layout import OutputLayout
from adatsq.export.graph_io import ShapesFluxAdapter, adapter_for


def test_compile_exports_certified_graphs_and_the_report(tmp_path: Path) -> None:
    assert isinstance(adapter_for("shapes_flux"), ShapesFluxAdapter)
    out = tmp_path / "out"
    args = ["shapes-flux", "-o", str(out), "--target", "3.1", "--steps", "2", "--calib-samples", "1"]
    args += ["--heldout-samples", "1", "--candidates", "2", "--device", "cpu"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    graphs = OutputLayout(out).onnx_graphs()
    assert graphs
    io = json.loads((out / "onnx" / "io.json").read_text())
    assert io["family"] == "shapes_flux"
    assert "guidance" not in {i["name"] for i in io["inputs"]}  # no guidance embedding in shapes-flux
    assert_golden_flux(out)
    report = out / "report"
    assert (report / "fisher_heatmap.png").stat().st_size > 0
    rows = json.loads((report / "step_error.json").read_text())
    assert len(rows) == 2  # one per denoising step
