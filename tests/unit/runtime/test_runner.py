"""Runner: engine switching through ONNX Runtime is certified against the torch backend call by call; bad
directories fail cleanly (RunnerError; exit code 2 through the CLI, nothing written); the diffusers shim
tracks steps; ``ADATSQ_ORT_THREADS`` reaches the ORT sessions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnxruntime
import pytest
import torch
from click.testing import CliRunner
from helpers.ort_session import ORT_THREADS_ENV, session_options
from helpers.runs import BackendReference, certify_calls, recorded_ort_run
from helpers.ties import STEP_MATCH, free_run_bound, rel

from adatsq.export.manifest import write_manifest
from adatsq.runtime.cli import main
from adatsq.runtime.runner import EngineRunner, RunnerError

SCHEDULE_GAP = 30 * STEP_MATCH  # another configuration on the same inputs differs at least this much


def test_ort_switching_matches_torch(compiled_tiny_flux: Path) -> None:
    """The ORT backend's trajectory, teacher-forced against the runner's torch backend.

    * Which engine ran: every call of the ORT run used the schedule's configuration of its step, each step
      once; the torch backend, switched by the runner (``set_step``), holds that step's bits.
    * What it computed: each ORT call's output equals the torch backend's on the SAME inputs, or differs by
      certified tie flips only (:func:`helpers.ties.certify_outputs`).
    * The schedule matters: on the same inputs the torch backend with another configuration differs from the
      ORT output by more than SCHEDULE_GAP (measured ≈ 1e-2; a tie flip moves tiny-flux's step output by
      ≤ 2e-3) and is NOT certifiable (its codes differ in bulk at the first layer whose bits differ), which no
      single flip can change.
    * Free-running, the final latents of the two backends agree within a few single-flip effects.
    """
    out = compiled_tiny_flux
    ort_runner, x_ort, calls = recorded_ort_run(out, seed=7, n=2)
    s = ort_runner.schedule
    assert len(set(s.step_configs)) >= 2
    assert ort_runner.used_configs == list(s.step_configs)
    assert [(c.step, c.config) for c in calls] == list(enumerate(s.step_configs))
    assert all(r.calls == 1 for r in ort_runner.steps)

    reference = BackendReference(out)
    for r in certify_calls(out, calls, reference):
        flips = "; ".join(map(str, r.flips)) or "none"
        print(
            f"step {r.call.step} config {r.call.config}: ORT vs torch backend {r.err:.1e}, tie flips: {flips}"
        )

    for call in calls:
        for other in sorted(set(s.step_configs) - {call.config}):
            reference.config_of = lambda _step, other=other: other
            gap = rel(call.output, reference.runner_for(call)())
            print(f"step {call.step}: configuration {other} instead of {call.config} differs by {gap:.1e}")
            assert gap > SCHEDULE_GAP
            with pytest.raises(AssertionError, match="not (a )?tie flips?"):
                certify_calls(out, [call], reference)
    reference.config_of = None

    x_ref = EngineRunner(out, backend="torch").generate(seed=7, n=2)
    err = rel(x_ort, x_ref)
    print(f"free-running final latents, ORT vs torch backend: {err:.1e}")
    assert err <= free_run_bound(s.model)


def test_ort_threads_env_reaches_the_sessions(
    compiled_tiny_flux: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ADATSQ_ORT_THREADS`` sets the runner's (and the tests' own) ORT intra-op threads; unset: ORT's 0."""
    seen: list[int] = []
    real = onnxruntime.InferenceSession

    def recording(path: str, opts: onnxruntime.SessionOptions, **kw: object) -> onnxruntime.InferenceSession:
        seen.append(opts.intra_op_num_threads)
        return real(path, opts, **kw)

    monkeypatch.setattr(onnxruntime, "InferenceSession", recording)
    for value, expected in (("1", 1), ("2", 2), (None, 0)):
        if value is None:
            monkeypatch.delenv(ORT_THREADS_ENV, raising=False)
        else:
            monkeypatch.setenv(ORT_THREADS_ENV, value)
        runner = EngineRunner(compiled_tiny_flux, backend="ort")
        runner._engine(runner.schedule.step_configs[0])
        assert seen[-1] == expected
        assert session_options().intra_op_num_threads == expected


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)  # keeps weights.safetensors -> onnx/weights.safetensors
    return dst


def _cli(args: list[str]) -> tuple[int, str]:
    r = CliRunner().invoke(main, args)
    return r.exit_code, r.output


def test_bad_manifest_hash(compiled_tiny_flux: Path, tmp_path: Path) -> None:
    """The runner checks the directory with export/manifest.py's verify_manifest (what the package stage
    wrote is what it checks): a file changed after packaging, a missing one, an unknown manifest format."""
    d = _copy(compiled_tiny_flux, tmp_path / "d")
    write_manifest(d, model={}, schedule={}, engines=[])
    EngineRunner(d)  # a freshly written manifest verifies
    manifest = json.loads((d / "manifest.json").read_text())
    manifest["files"]["onnx/config_00.onnx"]["sha256"] = "0" * 64
    (d / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RunnerError, match=r"onnx/config_00.onnx: sha256 differs"):
        EngineRunner(d)
    EngineRunner(d, verify=False)  # verification can be skipped
    code, out = _cli([str(d), "-o", str(tmp_path / "o.png")])
    assert code == 2 and "config_00.onnx" in out and not (tmp_path / "o.png").exists()
    (d / "onnx" / "io.json").unlink()  # and a second problem: reported first-in-path-order, then counted
    with pytest.raises(RunnerError, match=r"config_00.onnx: sha256 differs .*\(and 1 more problem"):
        EngineRunner(d)
    write_manifest(d, model={}, schedule={}, engines=[])
    (d / "schedule.json").write_text((d / "schedule.json").read_text() + " ")  # size changed
    with pytest.raises(RunnerError, match=r"schedule.json: size \d+ ≠ \d+ recorded in manifest.json$"):
        EngineRunner(d)
    (d / "manifest.json").write_text(json.dumps({"files": {"schedule.json": "0" * 64}}))  # no schema_version
    with pytest.raises(RunnerError, match="schema_version None is not supported"):
        EngineRunner(d)


def test_missing_engine(compiled_tiny_flux: Path, tmp_path: Path) -> None:
    d = _copy(compiled_tiny_flux, tmp_path / "d")
    (d / "onnx" / "config_01.onnx").unlink()
    code, out = _cli([str(d), "-o", str(tmp_path / "o.png")])
    assert code == 2 and "config_01.onnx" in out and not (tmp_path / "o.png").exists()


def test_wrong_steps_and_cli_success(compiled_tiny_flux: Path, tmp_path: Path) -> None:
    code, out = _cli([str(compiled_tiny_flux), "--steps", "7", "-o", str(tmp_path / "o.png")])
    assert code == 2 and "--steps 7" in out and not (tmp_path / "o.png").exists()
    code, out = _cli([str(compiled_tiny_flux), "--samples", "2", "-o", str(tmp_path / "o.png")])
    assert code == 0, out
    rec = json.loads((tmp_path / "o.json").read_text())
    assert [s["config"] for s in rec["steps"]] == rec["used_configs"]
    assert (tmp_path / "o.png").stat().st_size > 0


def test_shim_called_like_flux_pipeline(compiled_tiny_flux: Path) -> None:
    """Call the shim exactly as FluxPipeline.__call__'s denoising loop does (diffusers 0.42.1)."""
    from adatsq.core.models.flux import image_ids, pack

    runner = EngineRunner(compiled_tiny_flux, backend="ort")
    transformer = runner.transformer()
    s = runner.schedule
    assert transformer.config.guidance_embeds and transformer.dtype == torch.float32
    g = torch.Generator().manual_seed(0)
    latents = pack(torch.randn(1, 4, 16, 16, generator=g))
    prompt_embeds = torch.randn(1, 16, 32, generator=g)
    pooled = torch.randn(1, 32, generator=g)
    guidance = torch.full([1], 3.5, dtype=torch.float32).expand(latents.shape[0])
    for _round in range(2):  # a second generation restarts at step 0
        for t in torch.tensor(s.sampler.timesteps):
            timestep = t.expand(latents.shape[0]).to(latents.dtype)
            noise_pred = transformer(
                hidden_states=latents,
                timestep=timestep / 1000,
                guidance=guidance,
                pooled_projections=pooled,
                encoder_hidden_states=prompt_embeds,
                txt_ids=torch.zeros(16, 3),
                img_ids=image_ids(16, 16),
                joint_attention_kwargs=None,
                return_dict=False,
            )[0]
            assert noise_pred.shape == latents.shape
        assert runner.used_configs == list(s.step_configs)
    # two calls per step with the same timestep (CFG) count as one step
    runner.reset()
    for t in s.sampler.timesteps:
        for _ in range(2):
            out = transformer(hidden_states=latents, timestep=torch.tensor([t / 1000]), guidance=guidance,
                              pooled_projections=pooled, encoder_hidden_states=prompt_embeds,
                              txt_ids=torch.zeros(16, 3), img_ids=image_ids(16, 16))  # fmt: skip
            assert out.sample.shape == latents.shape
    assert runner.used_configs == list(s.step_configs)
    assert [r.calls for r in runner.steps] == [2] * s.steps


def test_torch_backend_with_fused_projections_generates_the_same(compiled_tiny_flux: Path) -> None:
    """fuse_projections (the default): q/k/v as one op per attention; bit for bit the unfused backend's final latents
    (the CPU op's per-group products of integer codes are exact in float32, then scaled per column in one
    order, so a column of the fused op is its member's, whatever the matmul's summation order)."""
    from adatsq.passes.fuse_projections import FusedProjection

    plain = EngineRunner(compiled_tiny_flux, backend="torch", fuse_projections=False)
    fused = EngineRunner(compiled_tiny_flux, backend="torch")  # the default
    assert any(isinstance(m, FusedProjection) for m in fused.torch_model.modules())
    assert not any(isinstance(m, FusedProjection) for m in plain.torch_model.modules())
    a, b = plain.generate(seed=3), fused.generate(seed=3)
    assert torch.equal(b, a)
    assert fused.used_configs == plain.used_configs == list(plain.schedule.step_configs)
