"""Prompt embeddings of a real checkpoint, computed once per compile (DESIGN.md, Scale).

Every prompt the compile needs (the calibration samples' prompts, then those of the end-to-end metric's
held-out samples) goes through the pipeline's own text encoders in one pass, on the compile device, before
the transformer is loaded (:func:`prepare`); the encoders are freed then, so T5-XXL (4.7 B parameters, 9.5 GB
in bf16) never sits on the GPU next to the 24 GB transformer. The embeddings are cached in
``cache/prompt_embeddings.pt``, one row per distinct prompt, under a key of the checkpoint (for a local
``--model-path`` also a digest of its text-encoder and tokenizer files, so an encoder retrained in place is
not served its predecessor's embeddings), the text length and the dtype: a resumed or re-targeted compile
loads no encoder at all, and one with more samples or other prompts encodes only the prompts the cache lacks.

Random-weight architectures and tiny models without ``--prompts`` use the family's synthetic conditioning
instead (no text encoders exist for them)."""

from __future__ import annotations

import dataclasses
import gc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from adatsq.compiler.context import CompileContext
from adatsq.core.atomic import atomic_write
from adatsq.core.hashing import file_digest, stable_hash
from adatsq.core.models.base import Conditioning
from adatsq.core.models.registry import load_text_encoders

__all__ = [
    "DEFAULT_PROMPTS",
    "EMBEDDINGS_FILE",
    "PromptEmbeddings",
    "chosen_prompts",
    "conditioning",
    "embeddings_key",
    "encoded",
    "needed_prompts",
    "prepare",
    "save",
    "uses_synthetic_conditioning",
]

#: under ``cache/``
EMBEDDINGS_FILE = "prompt_embeddings.pt"

#: prompts per ``encode_prompt`` call: T5-XXL at 512 tokens stays under 1 GB of activations
ENCODE_BATCH = 8

DEFAULT_PROMPTS = (
    "a photograph of an astronaut riding a horse on the moon",
    "a cozy wooden cabin in a snowy forest at dusk, warm light in the windows",
    "a close-up portrait of an elderly fisherman with a weathered face",
    "a bowl of ramen with a soft-boiled egg, studio food photography",
    "a futuristic city skyline at night with neon reflections on wet streets",
    "a watercolor painting of a fox sleeping under a cherry blossom tree",
    "a red vintage sports car parked on a coastal road, golden hour",
    "an isometric illustration of a tiny island with a lighthouse",
)


@dataclasses.dataclass
class PromptEmbeddings:
    """The conditioning of each distinct prompt (row i of every tensor belongs to ``prompts[i]``)."""

    key: str
    prompts: list[str]
    cond: Conditioning

    def select(self, chosen: Sequence[str]) -> Conditioning:
        index = {p: i for i, p in enumerate(self.prompts)}
        missing = [p for p in chosen if p not in index]
        if missing:
            raise KeyError(f"no cached embedding for the prompts {missing}")
        return self.cond.select(torch.tensor([index[p] for p in chosen], dtype=torch.long))

    def missing(self, prompts: Sequence[str]) -> list[str]:
        have = set(self.prompts)
        return [p for p in prompts if p not in have]

    def merged(self, prompts: list[str], cond: Conditioning) -> PromptEmbeddings:
        """These embeddings and those of ``prompts`` (new ones, rows of ``cond``)."""
        both = {k: torch.cat([v, cond[k]]) for k, v in self.cond.tensors.items()}
        return PromptEmbeddings(self.key, self.prompts + list(prompts), Conditioning(both))

    def state_dict(self) -> dict[str, Any]:
        return {"key": self.key, "prompts": list(self.prompts), "tensors": dict(self.cond.tensors)}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> PromptEmbeddings:
        return cls(
            str(state["key"]), [str(p) for p in state["prompts"]], Conditioning(dict(state["tensors"]))
        )


def uses_synthetic_conditioning(ctx: CompileContext) -> bool:
    return ctx.config.random_weights or (ctx.spec.is_tiny and not ctx.config.prompts)


def chosen_prompts(ctx: CompileContext, n: int, offset: int) -> list[str]:
    """The prompts of samples ``offset .. offset + n - 1``: ``--prompts``, else the family's defaults, else
    :data:`DEFAULT_PROMPTS`, repeated as often as needed."""
    prompts = list(ctx.config.prompts or ctx.family.default_prompts(ctx.spec) or DEFAULT_PROMPTS)
    return [prompts[(offset + i) % len(prompts)] for i in range(n)]


def needed_prompts(ctx: CompileContext) -> list[str]:
    """The distinct prompts of the calibration samples, then the held-out ones, then (``--metric geneval``)
    the GenEval prompts, in first-use order."""
    c = ctx.config
    wanted = chosen_prompts(ctx, c.calib_samples, 0) + chosen_prompts(ctx, c.heldout_samples, c.calib_samples)
    if c.metric == "geneval":
        from adatsq.compiler.geneval.metric import geneval_prompts

        wanted += [text for _spec, text in geneval_prompts(ctx)]
    return list(dict.fromkeys(wanted))


def encoder_files_digest(model_path: str | Path | None) -> str | None:
    """A digest of a local checkpoint folder's files outside ``transformer/`` (its text encoders, tokenizers,
    scheduler: whatever the embeddings depend on), by their names and contents (``core.hashing.file_digest``);
    None for a Hub id or no path. The transformer has its own weight fingerprint."""
    if model_path is None or not Path(model_path).is_dir():
        return None
    root = Path(model_path)
    files = sorted(
        p for p in root.rglob("*") if p.is_file() and p.relative_to(root).parts[0] != "transformer"
    )
    return stable_hash([(f.relative_to(root).as_posix(), file_digest(f)) for f in files])


def embeddings_key(ctx: CompileContext) -> dict[str, Any]:
    c = ctx.config
    return {
        "model": c.model,
        "model_path": str(c.model_path) if c.model_path is not None else None,
        "encoder_files": encoder_files_digest(c.model_path),
        "revision": ctx.spec.revision,
        "text_len": ctx.spec.text_len,
        "dtype": str(ctx.dtype),  # bf16 encoders on the GPU, float32 on the CPU: other numbers
    }


def _encode(ctx: CompileContext, prompts: list[str]) -> Conditioning:
    pipe = load_text_encoders(ctx.spec, ctx.config.model_path, ctx.dtype, ctx.device)
    parts: list[Conditioning] = []
    try:
        with ctx.progress("encode prompts", len(prompts)) as advance, torch.no_grad():
            for i in range(0, len(prompts), ENCODE_BATCH):
                batch = prompts[i : i + ENCODE_BATCH]
                parts.append(ctx.family.encode_prompts(pipe, batch, ctx.spec))
                advance(len(batch))
    finally:
        del pipe  # the encoders leave before the transformer comes
        gc.collect()
        if ctx.device.type == "cuda":
            torch.cuda.empty_cache()
    return Conditioning({k: torch.cat([p[k] for p in parts]) for k in parts[0].tensors})


def prepare(ctx: CompileContext) -> None:
    """Have the embeddings of :func:`needed_prompts` in ``ctx.prompt_embeddings``: from the cache when its
    key matches, encoding only the prompts it lacks (call it before the transformer is loaded; :func:`save`
    writes them once the output directory is locked). Nothing to do for synthetic conditioning."""
    if uses_synthetic_conditioning(ctx):
        return
    key = stable_hash(embeddings_key(ctx))
    have = ctx.prompt_embeddings
    if (have is None or have.key != key) and ctx.out.cache.is_dir():
        have = ctx.read_cache(EMBEDDINGS_FILE, PromptEmbeddings.from_state_dict)
    if have is None or have.key != key:
        have = None
    todo = needed_prompts(ctx) if have is None else have.missing(needed_prompts(ctx))
    if todo:
        ctx.log(f"encoding {len(todo)} prompts with the text encoders of {ctx.spec.name} on {ctx.device}")
        cond = _encode(ctx, todo)
        have = PromptEmbeddings(key, todo, cond) if have is None else have.merged(todo, cond)
        ctx.prompt_embeddings_unsaved = True
    ctx.prompt_embeddings = have


def save(ctx: CompileContext) -> None:
    """Write freshly encoded embeddings to the cache (rank 0, holding the directory's lock)."""
    if ctx.prompt_embeddings is not None and ctx.prompt_embeddings_unsaved:
        state = ctx.prompt_embeddings.state_dict()
        atomic_write(ctx.out.cache / EMBEDDINGS_FILE, lambda p: torch.save(state, p))
        ctx.prompt_embeddings_unsaved = False


def conditioning(
    ctx: CompileContext, n: int, offset: int, generator: torch.Generator
) -> tuple[Conditioning, list[str] | None]:
    """The conditioning of samples ``offset .. offset + n - 1`` and their prompts (None: synthetic, drawn
    from ``generator``). Real prompts come from the embeddings :func:`prepare` made; a caller that skipped
    it (the Python API on a bare context, a rank other than 0 under torchrun) gets them now."""
    if uses_synthetic_conditioning(ctx):
        return ctx.family.synthetic_conditioning(ctx.spec, ctx.model, n, generator), None
    chosen = chosen_prompts(ctx, n, offset)
    return encoded(ctx, chosen), chosen


def encoded(ctx: CompileContext, prompts: Sequence[str]) -> Conditioning:
    """The embeddings of ``prompts`` (one row each, in order) from ``ctx.prompt_embeddings``, which
    :func:`prepare` fills; prompts it lacks are encoded now."""
    have = ctx.prompt_embeddings
    if have is None or have.key != stable_hash(embeddings_key(ctx)) or have.missing(prompts):
        prepare(ctx)
        have = ctx.prompt_embeddings
        assert have is not None
        missing = list(dict.fromkeys(have.missing(prompts)))
        if missing:  # prompts of no compile stage (a caller's own): encoded once, kept with the rest
            ctx.prompt_embeddings = have = have.merged(missing, _encode(ctx, missing))
            ctx.prompt_embeddings_unsaved = True
    return have.select(list(prompts))
