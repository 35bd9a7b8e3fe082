"""The search stage measures its candidates on the runner's fused projections: the same costs and path
metrics, bit for bit on the CPU, as on the unfused model (each fused column is its member's contract-1
result), so fusing only makes the search faster."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import adatsq.compiler.stages.search as search_stage
from adatsq.compiler.cli import main
from adatsq.passes.fuse_projections import FusedProjection, SharedInput

pytestmark = pytest.mark.slow
FAST = ["--steps", "3", "--calib-samples", "2", "--candidates", "3", "--heldout-samples", "1"]


def _search(out: Path) -> dict:
    result = CliRunner().invoke(
        main,
        ["tiny-flux", "--target", "3.5", "-o", str(out), "--until", "search", *FAST],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    return torch.load(out / "cache" / "search.pt", weights_only=False)


def test_fused_search_measures_what_the_unfused_one_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fused_ops: list[int] = []
    real = search_stage.fuse_projections

    def counting(model: torch.nn.Module) -> int:
        n = real(model)
        fused_ops.append(sum(isinstance(m, (FusedProjection, SharedInput)) for m in model.modules()))
        return n

    monkeypatch.setattr(search_stage, "fuse_projections", counting)
    fused = _search(tmp_path / "fused")
    assert fused_ops and fused_ops[0] > 0  # tiny-flux's attentions and single blocks were fused
    monkeypatch.setattr(search_stage, "fuse_projections", lambda model: 0)
    plain = _search(tmp_path / "plain")
    assert fused["losses"] == plain["losses"]  # exact: the same floats for every (step, configuration)
    assert fused["metrics"] == plain["metrics"] and len(plain["metrics"]) > 1


def test_a_new_beam_rule_searches_a_cached_compile_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BEAM_RULES is in the search stage's key: a cached schedule of another rule is not reused."""
    out = tmp_path / "c"
    _search(out)
    first = (out / "schedule.json").stat().st_mtime_ns
    _search(out)
    assert (out / "schedule.json").stat().st_mtime_ns == first  # the same rule: the stage is cached
    monkeypatch.setattr(search_stage, "BEAM_RULES", search_stage.BEAM_RULES + 1)
    _search(out)
    assert (out / "schedule.json").stat().st_mtime_ns != first  # searched again
