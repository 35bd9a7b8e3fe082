"""The runner as the transformer of the REAL diffusers pipelines (FluxPipeline, WanPipeline, ZImagePipeline).

No text encoders or checkpoints here, so each pipeline gets precomputed prompt embeddings and a tiny
random-initialised VAE of the right class; the denoising loop, scheduler, latent packing and VAE decode are
the pipelines' own. The ONNX Runtime shim must switch engines per step as schedule.json says, and each of its
calls must give the torch backend's output on the SAME arguments (the pipeline's own, recorded), up to
certified tie flips (:func:`helpers.runs.certify_calls`). The free-running latents of the two backends'
pipelines are compared too, within a few single-flip effects (:func:`helpers.ties.free_run_bound`): one tie
flip moves them by up to ~4e-2 on these random tiny models, so a tighter free-running bound would test the
machine's rounding, not the shim.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers.runs import BackendReference, StepCall, certify_calls, record_engine_calls
from helpers.ties import free_run_bound, rel

from adatsq.runtime.runner import EngineRunner


def _flux(runner: EngineRunner) -> tuple[Any, dict[str, Any]]:
    from diffusers import AutoencoderKL, FluxPipeline

    cfg = runner.transformer_config
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 8, 8),  # 3 downsamplings: vae_scale_factor 8, as the real VAE
        layers_per_block=1,
        latent_channels=cfg["in_channels"] // 4,
        norm_num_groups=4,
        scaling_factor=0.3611,  # the FLUX.1 VAE's latent normalisation
        shift_factor=0.1159,
    )
    pipe = FluxPipeline(
        runner.family.make_scheduler(runner.spec), vae, None, None, None, None, runner.transformer()
    )
    g = torch.Generator().manual_seed(0)
    h, w = runner.schedule.resolution
    kwargs = dict(
        prompt_embeds=torch.randn(1, runner.spec.text_len, cfg["joint_attention_dim"], generator=g),
        pooled_prompt_embeds=torch.randn(1, cfg["pooled_projection_dim"], generator=g),
        height=h,
        width=w,
        guidance_scale=runner.spec.guidance_scale,
    )
    return pipe, kwargs


def _zimage(runner: EngineRunner) -> tuple[Any, dict[str, Any]]:
    from diffusers import AutoencoderKL, ZImagePipeline

    cfg = runner.transformer_config
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        layers_per_block=1,
        latent_channels=cfg["in_channels"],
        norm_num_groups=4,
        scaling_factor=0.3611,  # Z-Image uses the FLUX.1 VAE
        shift_factor=0.1159,
    )
    pipe = ZImagePipeline(runner.family.make_scheduler(runner.spec), vae, None, None, runner.transformer())
    g = torch.Generator().manual_seed(0)
    h, w = runner.schedule.resolution
    kwargs = dict(
        prompt_embeds=[torch.randn(runner.spec.text_len, cfg["cap_feat_dim"], generator=g)],
        height=h,
        width=w,
        guidance_scale=runner.spec.guidance_scale,
    )
    return pipe, kwargs


def _wan(runner: EngineRunner) -> tuple[Any, dict[str, Any]]:
    from diffusers import AutoencoderKLWan, WanPipeline

    cfg = runner.transformer_config
    vae = AutoencoderKLWan(base_dim=8, z_dim=cfg["in_channels"], dim_mult=[1, 1, 1, 1], num_res_blocks=1)
    pipe = WanPipeline(None, None, vae, runner.family.make_scheduler(runner.spec), runner.transformer())
    g = torch.Generator().manual_seed(0)
    f, h, w = runner.schedule.resolution
    emb = torch.randn(1, runner.spec.text_len, cfg["text_dim"], generator=g)
    kwargs = dict(
        prompt_embeds=emb,
        negative_prompt_embeds=torch.randn(emb.shape, generator=g),
        num_frames=f,
        height=h,
        width=w,
        guidance_scale=runner.spec.guidance_scale,
    )
    return pipe, kwargs


BUILDERS: dict[str, Callable[[EngineRunner], tuple[Any, dict[str, Any]]]] = {
    "flux": _flux,
    "zimage": _zimage,
    "wan": _wan,
}


def _generate(out: Path, backend: str, output_type: str) -> tuple[EngineRunner, Any, list[StepCall]]:
    """The family's real pipeline with the runner as transformer; an ORT runner's engine calls are recorded."""
    runner = EngineRunner(out, backend=backend)
    calls = record_engine_calls(runner) if backend == "ort" else []
    pipe, kwargs = BUILDERS[runner.family.name](runner)
    pipe.set_progress_bar_config(disable=True)
    result = pipe(
        **kwargs,
        num_inference_steps=runner.schedule.steps,
        generator=torch.Generator().manual_seed(1),
        output_type=output_type,
    )
    return runner, result, calls


@pytest.mark.parametrize(
    "fixture",
    ["compiled_tiny_flux", "compiled_tiny_zimage", pytest.param("compiled_tiny_wan", marks=pytest.mark.slow)],
)
def test_pipeline_switches_engines(fixture: str, request: pytest.FixtureRequest) -> None:
    out: Path = request.getfixturevalue(fixture)
    ort_runner, ort_out, calls = _generate(out, "ort", "latent")
    torch_runner, torch_out, _ = _generate(out, "torch", "latent")
    s = ort_runner.schedule
    calls_per_step = 2 if ort_runner.family.name == "wan" else 1  # Wan: conditional + unconditional call
    assert ort_runner.used_configs == list(s.step_configs) == torch_runner.used_configs
    assert [r.calls for r in ort_runner.steps] == [calls_per_step] * s.steps
    assert [c.step for c in calls] == [i for i in range(s.steps) for _ in range(calls_per_step)]
    assert [c.config for c in calls] == [s.step_configs[c.step] for c in calls]
    # teacher-forced: the torch backend on each ORT call's own arguments, certified
    for r in certify_calls(out, calls, BackendReference(out)):
        for f in r.flips:
            print(f"{out.name} step {r.call.step}: certified tie flip at {f}, output differed by {r.err:.1e}")
    x_ort, x_ref = (o.frames if hasattr(o, "frames") else o.images for o in (ort_out, torch_out))
    x_ort, x_ref = (torch.as_tensor(x).float() for x in (x_ort, x_ref))
    err = rel(x_ort, x_ref)
    print(f"{out.name}: real diffusers pipeline, free-running ORT vs torch backend latents {err:.1e}")
    assert x_ort.shape == x_ref.shape and torch.isfinite(x_ort).all()
    assert err <= free_run_bound(s.model)


def test_pipeline_decodes_an_image(compiled_tiny_flux: Path) -> None:
    runner, result, _ = _generate(compiled_tiny_flux, "ort", "np")
    h, w = runner.schedule.resolution
    assert result.images.shape == (1, h, w, 3)
    assert runner.used_configs == list(runner.schedule.step_configs)
