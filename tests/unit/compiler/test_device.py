"""--device and --random-weights: validation, resolution of ``auto``, building real architectures in bf16
with the class's float32 modules kept, and the GPU scope stated by an error instead of a silent CPU run."""

from __future__ import annotations

import pytest
import torch

from adatsq.compiler.context import CompileContext
from adatsq.compiler.settings import CompileConfig
from adatsq.core.errors import CompileError
from adatsq.core.models.registry import build_architecture, get_spec

BASE = {"model": "tiny-flux", "target": 3.1, "out": "unused"}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"device": "gpu"}, "--device 'gpu' is not one of auto, cpu, cuda, cuda:N"),
        ({"model": "flux-dev", "random_weights": True, "model_path": "x"}, "takes no --model-path"),
        ({"model": "flux-dev", "random_weights": True, "prompts": ("a",)}, "drop --prompts"),
    ],
)
def test_bad_device_options(changes: dict, message: str) -> None:
    with pytest.raises(CompileError, match=message):
        CompileConfig(**{**BASE, **changes})


def test_auto_device_follows_the_machine_and_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """auto: the GPU when present, for every stage, except the tiny models (CPU float32 reference numerics)."""
    assert CompileConfig(**BASE, device="cpu").resolved_device() == "cpu"
    flux = {**BASE, "model": "flux-dev"}
    for gpu in (False, True):
        monkeypatch.setattr(torch.cuda, "is_available", lambda gpu=gpu: gpu)
        assert CompileConfig(**flux).resolved_device(get_spec("flux-dev")) == ("cuda" if gpu else "cpu")
        assert CompileConfig(**BASE).resolved_device(get_spec("tiny-flux")) == "cpu"
        assert CompileConfig(**BASE, device="cuda").resolved_device(get_spec("tiny-flux")) == "cuda"


def test_gpu_budgets_have_their_own_defaults() -> None:
    c = CompileConfig(**BASE)
    assert c.resolved_hessian_memory_gb("cpu") == 8.0
    assert c.resolved_hessian_memory_gb("cuda") == 40.0
    assert CompileConfig(**BASE, hessian_memory_gb=2.5).resolved_hessian_memory_gb("cuda") == 2.5
    assert CompileConfig(**BASE, calib_samples=4).resolved_search_samples() == 4
    assert CompileConfig(**BASE, calib_samples=4, search_samples=1).resolved_search_samples() == 1
    assert CompileConfig(**BASE, calib_samples=2, search_samples=9).resolved_search_samples() == 2
    with pytest.raises(CompileError, match="--search-samples must be ≥ 1"):
        CompileConfig(**BASE, search_samples=0)
    with pytest.raises(CompileError, match="--hessian-memory must be > 0"):
        CompileConfig(**BASE, hessian_memory_gb=0)


def test_gpu_hessian_budget_fits_the_free_memory() -> None:
    """On the GPU the default budget leaves GPTQ_RESERVE_GB beside the Hessians: an H200 or H100 with Flux-dev
    loaded keeps the 40 GB, a smaller card gets less (more replays), too little is an error naming the fixes;
    an explicit --hessian-memory is taken as given."""
    from adatsq.compiler.settings import GPTQ_RESERVE_GB

    c = CompileConfig(**BASE)
    assert c.resolved_hessian_memory_gb("cuda", free_gb=114.0) == 40.0  # H200, Flux-dev's 24 GB resident
    assert c.resolved_hessian_memory_gb("cuda", free_gb=54.6) == 40.0  # H100 80GB
    assert c.resolved_hessian_memory_gb("cuda", free_gb=30.0) == pytest.approx(30.0 - GPTQ_RESERVE_GB)
    assert c.resolved_hessian_memory_gb("cpu", free_gb=3.0) == 8.0  # the CPU ignores GPU memory
    with pytest.raises(CompileError, match="--hessian-memory, or compile with --device cpu"):
        c.resolved_hessian_memory_gb("cuda", free_gb=GPTQ_RESERVE_GB + 0.5)
    assert CompileConfig(**BASE, hessian_memory_gb=2.5).resolved_hessian_memory_gb("cuda", free_gb=3.0) == 2.5
    assert c.resolved_hessian_memory_gb("cuda", free_gb=54.6, reserve_gb=20.0) == pytest.approx(34.6)
    with pytest.raises(CompileError, match="it needs 21 GB or more"):
        c.resolved_hessian_memory_gb("cuda", free_gb=20.5, reserve_gb=20.0)


def test_gptq_reserve_grows_with_the_widest_layer() -> None:
    """Flux-dev's widest layer (proj_out, 3072×15360) fits the fixed reserve; a wider one raises it by its
    GPTQ peak (three float64 K×K buffers at K = 32768 are 24 GiB)."""
    from adatsq.calib.gptq import gptq_peak_bytes
    from adatsq.compiler.settings import GPTQ_RESERVE_GB
    from adatsq.compiler.stages.quantize import gptq_reserve_gb

    flux = [(3072, 3072), (12288, 3072), (3072, 12288), (3072, 15360)]
    assert gptq_reserve_gb(flux) == GPTQ_RESERVE_GB
    assert gptq_peak_bytes(3072, 15360) / 2**30 < GPTQ_RESERVE_GB - 2.0
    wide = gptq_reserve_gb([*flux, (4096, 32768)])
    assert wide == pytest.approx(1.25 * gptq_peak_bytes(4096, 32768) / 2**30 + 2.0)
    assert wide > 24 * 1.25


def test_tiny_models_reject_random_weights() -> None:
    with pytest.raises(CompileError, match="has random weights already"):
        CompileContext(CompileConfig(**BASE, random_weights=True, device="cpu"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of a machine without a GPU")
def test_cuda_without_a_gpu_is_a_clear_error() -> None:
    with pytest.raises(CompileError, match="no CUDA GPU is visible"):
        CompileContext(CompileConfig(**BASE, device="cuda"))


def test_random_weights_build_the_real_architecture(monkeypatch: pytest.MonkeyPatch) -> None:
    """flux-dev --random-weights builds the published architecture (on the meta device here: 11.9 B
    parameters, nothing allocated) instead of going to the Hub."""
    import adatsq.compiler.context as context

    built = {}

    def on_meta(spec, device, seed, dtype):  # noqa: ANN001, ANN202
        built.update(name=spec.name, device=str(device), seed=seed, dtype=dtype)
        return build_architecture(spec, device="meta", seed=seed, dtype=dtype)

    monkeypatch.setattr(context, "build_architecture", lambda spec, **kw: on_meta(spec, **kw))
    ctx = CompileContext(
        CompileConfig(model="flux-dev", target=3.1, out="x", random_weights=True, device="cpu", seed=5)
    )
    n = sum(p.numel() for p in ctx.model.parameters())
    assert built == {"name": "flux-dev", "device": "cpu", "seed": 5, "dtype": torch.float32}
    assert n == 11_901_408_320


def test_bf16_build_keeps_the_float32_modules() -> None:
    """Built directly in bf16 (no float32 copy first), except what the class keeps in float32, as
    from_pretrained does (Wan's time embedder, scale_shift_table); seeded."""
    spec = get_spec("tiny-wan")
    half = build_architecture(spec, device="cpu", seed=3, dtype=torch.bfloat16)
    full = build_architecture(spec, device="cpu", seed=3)
    keep = set(type(half)._keep_in_fp32_modules or ())
    assert keep, "WanTransformer3DModel keeps modules in float32"
    for name, p in half.named_parameters():
        kept = bool(keep & set(name.split(".")))
        assert p.dtype == (torch.float32 if kept else torch.bfloat16), name
    assert any(bool(keep & set(n.split("."))) for n, _ in half.named_parameters())
    w = dict(full.named_parameters())["blocks.0.attn1.to_q.weight"]
    # seeded: the same draws again (bf16 initialisation draws other numbers than float32's: same scale only)
    again = build_architecture(spec, device="cpu", seed=3, dtype=torch.bfloat16)
    name = "blocks.0.attn1.to_q.weight"
    h = dict(half.named_parameters())[name]
    assert torch.equal(h, dict(again.named_parameters())[name])
    assert float(h.float().std() / w.std()) == pytest.approx(1.0, rel=0.05)
