"""The packaged shapes-flux checkpoint (trained on the H200, adatsq/core/models/shapes/train.py) loads through
the registry and is a trained model: its FP samples pass GenEval-mini where an untrained one scores 0."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from adatsq.compiler.geneval import evaluate
from adatsq.core.models import family_of, get_spec, load_text_encoders, load_transformer, run_sampler
from adatsq.core.models.shapes.scenes import evaluation_set

CHECKPOINT = Path(get_spec("shapes-flux").hf_id)


def test_record_says_how_it_was_trained() -> None:
    rec = json.loads((CHECKPOINT / "train_record.json").read_text())
    # the run finished, or its last run says where it stopped (a save on its way: --stop-at reproduces it)
    assert rec["model"] == "shapes-flux" and rec["step"] in (
        rec["config"]["steps"],
        rec["runs"][-1].get("stop_at"),
    )
    assert rec["runs"][-1]["end_step"] == rec["step"]
    assert rec["device"].startswith("cuda")
    final = rec["loss"][-1][1]
    first = rec["loss"][0][1]
    assert final < 0.05 < first  # rectified-flow loss fell from ~1 (noise) to a trained level


def test_fp_samples_pass_geneval_mini() -> None:
    spec = get_spec("shapes-flux")
    fam = family_of(spec)
    model = load_transformer(spec, CHECKPOINT).float()
    # single objects and colours: the categories the FP model passes most often (BENCHMARKS.md quality table)
    evals = [(s, t) for s, t in evaluation_set(4, seed=2026) if s.category in ("single_object", "colors")]
    texts = [t for _, t in evals]
    cond = fam.encode_prompts(load_text_encoders(spec, CHECKPOINT), texts, spec)
    noise = fam.sample_noise(spec, model, spec.resolution, len(texts), torch.Generator().manual_seed(0))
    with torch.no_grad():
        final = run_sampler(fam, spec, model, noise, cond, 20)
    result = evaluate(fam.decode_images(final), [s for s, _ in evals], n_boot=10, seed=0)
    passed = round(result.total.accuracy * len(evals))
    # an untrained checkpoint passes none of these (its samples are noise); a margin of several images keeps
    # the floor far from any image whose verdict a last-bit difference could flip
    print(f"{passed} of {len(evals)} FP samples pass")
    assert passed >= 3, f"{passed} of {len(evals)} FP samples pass"
