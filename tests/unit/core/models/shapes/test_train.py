"""train.py on the CPU: a few steps write a checkpoint the registry loads; a resumed run continues."""

from __future__ import annotations

import json

import pytest
import torch

from adatsq.core.models import family_of, get_spec, load_text_encoders, load_transformer, run_sampler
from adatsq.core.models.shapes.family import TRANSFORMER_CONFIG
from adatsq.core.models.shapes.text_encoder import WordTokenizer, shapes_vocabulary
from adatsq.core.models.shapes.train import TrainConfig, main, seed_of, step_batch, train

SPEC = get_spec("shapes-flux")
# the registry's architecture with fewer blocks (the registry loads what checkpoint/transformer/config.json says)
SMALL = {**TRANSFORMER_CONFIG, "num_layers": 1, "num_single_layers": 1}


@pytest.fixture(scope="module", autouse=True)
def _diffusers_imported() -> None:
    """diffusers' lazy imports (several seconds on a busy 2-core machine) happen once, in setup."""
    from diffusers import FluxPipeline, FluxTransformer2DModel  # noqa: F401


def test_batches_are_a_function_of_seed_and_step() -> None:
    cfg = TrainConfig(batch=2, seed=3)
    tok = WordTokenizer(shapes_vocabulary(), 16)
    a, b, c = step_batch(cfg, tok, 5), step_batch(cfg, tok, 5), step_batch(cfg, tok, 6)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["noise"], c["noise"])
    assert a["images"].shape == (2, 3, 32, 32) and a["images"].min() >= -1 and a["images"].max() <= 1
    assert ((a["sigma"] > 0) & (a["sigma"] <= 1)).all()
    assert seed_of(3, 5) != seed_of(4, 5)
    assert TrainConfig(warmup=10, steps=100).lr_factor(0) == 0.1


def test_train_writes_a_loadable_checkpoint_and_resumes(tmp_path) -> None:
    out = tmp_path / "run"
    rec = train(
        out, TrainConfig(steps=2, batch=2, warmup=4), log_every=1, transformer_config=SMALL, command=["t"]
    )
    assert json.loads((out / "train_record.json").read_text()) == rec
    assert rec["step"] == 2 and [s for s, _ in rec["loss"]] == [1, 2]
    assert all(torch.isfinite(torch.tensor(loss)) for _, loss in rec["loss"])
    assert rec["checkpoint_weight_bytes"] <= 20_000_000 and rec["torch"] == torch.__version__

    ckpt = out / "checkpoint"
    model = load_transformer(SPEC, model_path=ckpt)
    assert json.loads((ckpt / "transformer" / "config.json").read_text())["in_channels"] == 12
    weights = next(iter((ckpt / "transformer").glob("*.safetensors"))).stat().st_size
    assert weights < 2 * sum(p.numel() for p in model.parameters()) + 100_000  # float16 on disk
    enc = load_text_encoders(SPEC, model_path=ckpt)
    fam = family_of(SPEC)
    cond = fam.encode_prompts(enc, ["a blue square"], SPEC)
    noise = fam.sample_noise(SPEC, model, SPEC.resolution, 1, torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert run_sampler(fam, SPEC, model, noise, cond, steps=2).shape == (1, 3, 32, 32)

    rec2 = train(
        out, TrainConfig(steps=3, batch=2, warmup=4), log_every=1, transformer_config=SMALL
    )  # resume: one more step
    assert rec2["step"] == 3 and [s for s, _ in rec2["loss"]] == [1, 2, 3]
    assert [r["start_step"] for r in rec2["runs"]] == [0, 2]
    assert rec2["loss"][:2] == rec["loss"]


def test_cli_stops_at_the_wall_budget(tmp_path, monkeypatch) -> None:
    import adatsq.core.models.shapes.train as train_mod

    monkeypatch.setattr(train_mod, "TRANSFORMER_CONFIG", SMALL)
    assert main(["--out", str(tmp_path), "--steps", "50", "--batch", "1", "--minutes", "0"]) == 0
    rec = json.loads((tmp_path / "train_record.json").read_text())
    assert rec["step"] == 0 and rec["runs"][0]["command"][-2:] == ["--minutes", "0"]
    assert (tmp_path / "checkpoint" / "model_index.json").is_file()


def test_stop_at_reproduces_a_run_on_its_way(tmp_path) -> None:
    """--stop-at: the steps of a longer run (its schedule, its data) up to that step, then a clean save:
    what that run's periodic save at the step held."""
    full = train(
        tmp_path / "full", TrainConfig(steps=4, batch=2, warmup=4), log_every=1, transformer_config=SMALL
    )
    part = train(
        tmp_path / "part",
        TrainConfig(steps=4, batch=2, warmup=4),
        log_every=1,
        transformer_config=SMALL,
        stop_at=2,
    )
    assert part["step"] == 2 and part["runs"][-1]["stop_at"] == 2 and part["runs"][-1]["end_step"] == 2
    assert (
        part["loss"] == full["loss"][:2]
    )  # the same steps: the 4-step schedule's learning rates, its batches
    assert (tmp_path / "part" / "checkpoint" / "model_index.json").is_file()


def test_a_run_continues_a_checkpoint_with_init_from(tmp_path) -> None:
    """--init-from: the checkpoint's EMA weights, the data sequence and the loss curve go on from its last
    step, a new warm-up from there; a checkpoint of another optimisation or step is refused."""
    from diffusers.utils import SAFETENSORS_WEIGHTS_NAME
    from safetensors.torch import load_file
    from transformers.utils import SAFE_WEIGHTS_NAME

    first = train(
        tmp_path / "a", TrainConfig(steps=2, batch=2, warmup=4), log_every=1, transformer_config=SMALL
    )
    ckpt = tmp_path / "a" / "checkpoint"
    cfg = TrainConfig(steps=4, batch=2, warmup=4, start=2)
    assert cfg.lr_factor(2) == 0.25 and TrainConfig(steps=4, batch=2, warmup=4).lr_factor(2) == 0.75
    same = train(tmp_path / "b0", cfg, minutes=0, transformer_config=SMALL, init_from=ckpt)
    assert same["step"] == 2  # no step taken: the checkpoint written again is the loaded one, bit for bit
    for part, name in (("transformer", SAFETENSORS_WEIGHTS_NAME), ("text_encoder", SAFE_WEIGHTS_NAME)):
        a = load_file(str(ckpt / part / name))
        b = load_file(str(tmp_path / "b0" / "checkpoint" / part / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rec = train(tmp_path / "b", cfg, log_every=1, transformer_config=SMALL, init_from=ckpt)
    assert rec["step"] == 4 and [s for s, _ in rec["loss"]] == [1, 2, 3, 4]
    assert rec["loss"][:2] == first["loss"] and rec["runs"][:1] == first["runs"]
    assert rec["runs"][1]["start_step"] == 2 and rec["runs"][1]["init_from"] == str(ckpt)
    with pytest.raises(ValueError, match="must start there"):
        train(tmp_path / "c", TrainConfig(steps=4, batch=2, warmup=4, start=1), init_from=ckpt)
    with pytest.raises(ValueError, match="was trained with"):
        train(tmp_path / "d", TrainConfig(steps=4, batch=2, warmup=4, start=2, lr=1e-3), init_from=ckpt)


def test_cli_init_from_starts_at_the_checkpoints_step(tmp_path, monkeypatch) -> None:
    import adatsq.core.models.shapes.train as train_mod

    monkeypatch.setattr(train_mod, "TRANSFORMER_CONFIG", SMALL)
    common = ["--batch", "1", "--warmup", "4", "--log-every", "1"]
    assert main(["--out", str(tmp_path / "a"), "--steps", "1", *common]) == 0
    ckpt = tmp_path / "a" / "checkpoint"
    assert main(["--out", str(tmp_path / "b"), "--steps", "2", "--init-from", str(ckpt), *common]) == 0
    rec = json.loads((tmp_path / "b" / "train_record.json").read_text())
    assert rec["config"]["start"] == 1 and rec["step"] == 2 and [s for s, _ in rec["loss"]] == [1, 2]
