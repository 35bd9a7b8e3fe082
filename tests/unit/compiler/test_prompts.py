"""Real prompts at scale (compiler/prompts.py): encoded once by the pipeline's own text encoders before the
transformer is loaded, the encoders freed, the embeddings cached; a later compile encodes only what the cache
lacks. Run on a tiny real FluxPipeline saved here (tests/helpers/pipelines.py)."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers.pipelines import save_tiny_pipeline

import adatsq.compiler.context as context_module
import adatsq.compiler.prompts as prompts_module
from adatsq.compiler.context import CompileContext
from adatsq.compiler.pipeline import run_pipeline
from adatsq.compiler.prompts import (
    EMBEDDINGS_FILE,
    PromptEmbeddings,
    conditioning,
    needed_prompts,
    prepare,
    save,
)
from adatsq.compiler.settings import CompileConfig
from adatsq.core.models import family_of, get_spec, load_text_encoders
from adatsq.core.models.registry import ModelLoadError

pytest.importorskip("transformers")

PROMPTS = ("a red cat", "a blue dog on a hill", "a green house", "a yellow boat")


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_pipeline("flux", tmp_path_factory.mktemp("pipe"))


def _config(out: Path, pipeline_dir: Path, **kw: Any) -> CompileConfig:
    base: dict[str, Any] = {
        "model": "tiny-flux",
        "target": 3.1,
        "out": str(out),
        "steps": 2,
        "calib_samples": 2,
        "heldout_samples": 1,
        "model_path": str(pipeline_dir),
        "prompts": PROMPTS,
        "device": "cpu",
        "until": "calibrate",
    }
    return CompileConfig(**{**base, **kw})


def _direct(pipeline_dir: Path, prompts: list[str]) -> dict[str, torch.Tensor]:
    spec = get_spec("tiny-flux")
    pipe = load_text_encoders(spec, pipeline_dir)
    with torch.no_grad():
        return family_of(spec).encode_prompts(pipe, prompts, spec).tensors


def _spy(monkeypatch: pytest.MonkeyPatch) -> tuple[list[Any], list[weakref.ref]]:
    """Record each text-encoder load (the prompts it then encodes) and each transformer load, and keep a weak
    reference to every loaded encoder pipeline."""
    events: list[Any] = []
    pipes: list[weakref.ref] = []
    real_encoders, real_transformer = prompts_module.load_text_encoders, context_module.load_transformer

    def encoders(*args: Any, **kwargs: Any) -> Any:
        pipe = real_encoders(*args, **kwargs)
        pipes.append(weakref.ref(pipe))
        events.append("encoders")
        return pipe

    def transformer(*args: Any, **kwargs: Any) -> Any:
        gc.collect()
        events.append(("transformer", [p() is None for p in pipes]))
        return real_transformer(*args, **kwargs)

    real_encode = prompts_module._encode

    def encode(ctx: CompileContext, todo: list[str]) -> Any:
        events.append(("encode", list(todo)))
        return real_encode(ctx, todo)

    monkeypatch.setattr(prompts_module, "load_text_encoders", encoders)
    monkeypatch.setattr(prompts_module, "_encode", encode)
    monkeypatch.setattr(context_module, "load_transformer", transformer)
    return events, pipes


def test_encoders_run_once_and_are_freed_before_the_transformer_loads(
    tmp_path: Path, pipeline_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events, _ = _spy(monkeypatch)
    ctx = CompileContext(_config(tmp_path / "out", pipeline_dir))
    assert run_pipeline(ctx) == {"load": "ran", "calibrate": "ran"}
    # calibration prompts 0, 1 and the held-out prompt 2, encoded in one pass; the pipeline was gone when
    # the transformer came
    assert events == [("encode", list(PROMPTS[:3])), "encoders", ("transformer", [True])]
    cached = torch.load(tmp_path / "out" / "cache" / EMBEDDINGS_FILE, weights_only=False)
    assert cached["prompts"] == list(PROMPTS[:3])
    # the calibration ran on exactly the pipeline's own embeddings of its prompts
    direct = _direct(pipeline_dir, list(PROMPTS[:2]))
    assert ctx.calibration.provenance["prompts"] == list(PROMPTS[:2])
    for key, value in direct.items():
        got = ctx.calibration.cond[key]
        assert got.shape == value.shape and got.dtype == torch.float32
        assert torch.allclose(got, value, rtol=1e-5, atol=1e-6), key


def test_a_later_compile_encodes_only_the_prompts_the_cache_lacks(
    tmp_path: Path, pipeline_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    run_pipeline(CompileContext(_config(out, pipeline_dir)))
    events, _ = _spy(monkeypatch)
    again = CompileContext(_config(out, pipeline_dir))
    assert run_pipeline(again) == {"load": "cached", "calibrate": "cached"}
    assert events == [("transformer", [])]  # no encoder loaded at all
    # one more held-out sample: its prompt (index 3) is new, the other three come from the cache
    events.clear()
    more = CompileContext(_config(out, pipeline_dir, heldout_samples=2))
    run_pipeline(more)
    assert events[0] == ("encode", [PROMPTS[3]])
    assert more.prompt_embeddings is not None and more.prompt_embeddings.prompts == list(PROMPTS)
    cond, chosen = conditioning(more, 2, 2, torch.Generator())
    assert chosen == [PROMPTS[2], PROMPTS[3]]
    direct = _direct(pipeline_dir, chosen)
    assert all(torch.allclose(cond[k], v, rtol=1e-5, atol=1e-6) for k, v in direct.items())


def test_embeddings_of_another_checkpoint_or_dtype_are_not_reused(tmp_path: Path, pipeline_dir: Path) -> None:
    ctx = CompileContext(_config(tmp_path / "out", pipeline_dir))
    ctx.out.cache.mkdir(parents=True)
    prepare(ctx)
    save(ctx)
    state = torch.load(ctx.out.cache / EMBEDDINGS_FILE, weights_only=False)
    state["key"] = "another checkpoint"
    torch.save(state, ctx.out.cache / EMBEDDINGS_FILE)
    fresh = CompileContext(_config(tmp_path / "out", pipeline_dir))
    prepare(fresh)
    assert fresh.prompt_embeddings_unsaved and fresh.prompt_embeddings.key == ctx.prompt_embeddings.key


def test_select_and_merge() -> None:
    from adatsq.core.models.base import Conditioning

    emb = PromptEmbeddings("k", ["a", "b"], Conditioning({"x": torch.tensor([[1.0], [2.0]])}))
    both = emb.merged(["c"], Conditioning({"x": torch.tensor([[3.0]])}))
    assert both.missing(["a", "c", "d"]) == ["d"]
    assert torch.equal(both.select(["c", "a", "c"])["x"], torch.tensor([[3.0], [1.0], [3.0]]))
    with pytest.raises(KeyError, match="'d'"):
        both.select(["d"])
    again = PromptEmbeddings.from_state_dict(both.state_dict())
    assert again.prompts == ["a", "b", "c"] and torch.equal(again.cond["x"], both.cond["x"])


def test_needed_prompts_cycle_and_dedupe(tmp_path: Path, pipeline_dir: Path) -> None:
    ctx = CompileContext(_config(tmp_path / "o", pipeline_dir, calib_samples=5, heldout_samples=2))
    assert needed_prompts(ctx) == list(PROMPTS)  # 7 samples over 4 prompts


def test_synthetic_conditioning_encodes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_encoders(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("synthetic conditioning loaded text encoders")

    monkeypatch.setattr(prompts_module, "load_text_encoders", no_encoders)
    out = tmp_path / "out"
    config = CompileConfig(
        model="tiny-flux", target=3.1, out=str(out), steps=2, calib_samples=1, until="calibrate"
    )
    ctx = CompileContext(config)
    run_pipeline(ctx)
    assert ctx.prompt_embeddings is None and not (out / "cache" / EMBEDDINGS_FILE).exists()


def test_a_transformer_folder_alone_cannot_encode_prompts(tmp_path: Path, pipeline_dir: Path) -> None:
    out = tmp_path / "out"
    ctx = CompileContext(_config(out, pipeline_dir / "transformer"))
    with pytest.raises(ModelLoadError, match="no model_index.json .* pass the whole pipeline folder"):
        run_pipeline(ctx)
    assert not out.exists()  # failed before the directory was created


def test_an_encoder_retrained_in_place_is_encoded_and_calibrated_again(
    tmp_path: Path, pipeline_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same --model-path, the same transformer, a changed text encoder: the cached embeddings and the
    calibration made with them are stale; both are made again, from the new encoder."""
    import shutil

    from safetensors.torch import load_file, save_file

    ckpt = tmp_path / "ckpt"
    shutil.copytree(pipeline_dir, ckpt)
    out = tmp_path / "out"
    assert run_pipeline(CompileContext(_config(out, ckpt))) == {"load": "ran", "calibrate": "ran"}
    digest = prompts_module.encoder_files_digest(ckpt)
    assert digest == prompts_module.encoder_files_digest(pipeline_dir)  # by content, not by path
    weights = next(ckpt.glob("text_encoder/*.safetensors"))
    tensors = load_file(str(weights))
    name = next(k for k, v in tensors.items() if v.is_floating_point() and v.dim() == 2)
    tensors[name] = tensors[name] * 1.5  # "retrained"
    save_file(tensors, str(weights), metadata={"format": "pt"})
    assert prompts_module.encoder_files_digest(ckpt) != digest
    events, _ = _spy(monkeypatch)
    again = CompileContext(_config(out, ckpt))
    assert run_pipeline(again) == {"load": "cached", "calibrate": "ran"}
    assert events[0] == ("encode", list(PROMPTS[:3]))
    direct = _direct(ckpt, list(PROMPTS[:2]))
    assert all(torch.allclose(again.calibration.cond[k], v, rtol=1e-5, atol=1e-6) for k, v in direct.items())
    before = _direct(pipeline_dir, list(PROMPTS[:2]))  # the encoder as it was: other embeddings
    assert any(not torch.allclose(again.calibration.cond[k], v) for k, v in before.items())
