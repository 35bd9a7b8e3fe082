"""Tiny real diffusers pipelines (Flux, Z-Image, Wan) written to disk without the Hugging Face Hub.

Every component is the class the real checkpoint uses, at a tiny size with seeded random weights: the
tokenizers are built from small hand-written vocabularies (CLIP byte-level BPE, T5/UMT5 Unigram, Qwen
byte-level BPE with a chat template), the text encoders are 1–2 layer models of width 32 (the width the tiny
transformers of the registry expect: Flux ``joint_attention_dim``/``pooled_projection_dim``, Wan
``text_dim``, Z-Image ``cap_feat_dim``), the VAE has the class and latent channels the pipeline expects, the
scheduler is the family's, and the transformer is the registry's tiny one.
"""

from __future__ import annotations

import pathlib
from typing import Any

import torch

__all__ = ["PROMPT_WORDS", "TEXT_WIDTH", "save_tiny_pipeline"]

#: width of every tiny text encoder (the tiny transformers' text input width)
TEXT_WIDTH = 32

#: words every tiny tokenizer knows as whole tokens (other text falls back to letters)
PROMPT_WORDS = (
    "a",
    "an",
    "the",
    "red",
    "blue",
    "green",
    "cat",
    "dog",
    "on",
    "hill",
    "in",
    "of",
    "photo",
    "user",
    "assistant",
)

_LETTERS = "abcdefghijklmnopqrstuvwxyz"

_TINY_SPECS = {"flux": "tiny-flux", "zimage": "tiny-zimage", "wan": "tiny-wan"}

# Qwen's chat template reduced to what ZImagePipeline uses (user turns, generation prompt); with
# enable_thinking=True the real Qwen3 template adds nothing after "<|im_start|>assistant\n" either.
_QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def _bpe_vocab(
    specials: list[str], letters: list[str], words: list[list[str]]
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocabulary and merges of a BPE that spells every word of ``words`` (lists of symbols) left to right."""
    vocab: dict[str, int] = {}
    for tok in [*specials, *letters]:
        vocab.setdefault(tok, len(vocab))
    merges: list[tuple[str, str]] = []
    for symbols in words:
        acc = symbols[0]
        for s in symbols[1:]:
            merge = (acc, s)
            acc += s
            if merge not in merges:
                merges.append(merge)
            vocab.setdefault(acc, len(vocab))
    return vocab, merges


def _clip_tokenizer() -> Any:
    from transformers import CLIPTokenizer

    specials = ["<|startoftext|>", "<|endoftext|>"]
    letters = [c for c in _LETTERS] + [c + "</w>" for c in _LETTERS]
    words = [[*w[:-1], w[-1] + "</w>"] for w in PROMPT_WORDS if len(w) > 1]
    vocab, merges = _bpe_vocab(specials, letters, words)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def _t5_tokenizer(cls_name: str) -> Any:
    """T5 / UMT5 tokenizer (a SentencePiece-style Unigram; no ``<extra_id_*>`` sentinels)."""
    import transformers

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [(f"▁{w}", -1.0) for w in PROMPT_WORDS]
    vocab += [(c, -3.0) for c in _LETTERS]
    return getattr(transformers, cls_name)(vocab=vocab, extra_ids=0, model_max_length=512)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte → printable character map of byte-level BPE (space → "Ġ", newline → "Ċ")."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = list(keep)
    n = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(keep, map(chr, chars)))


def _qwen_tokenizer() -> Any:
    from transformers import Qwen2Tokenizer

    byte_map = _bytes_to_unicode()
    space, newline = byte_map[ord(" ")], byte_map[ord("\n")]
    letters = [*_LETTERS, space, newline, *(byte_map[ord(c)] for c in "<|>_.,")]
    words = [list(w) for w in PROMPT_WORDS if len(w) > 1] + [[space, w] for w in PROMPT_WORDS]
    vocab, merges = _bpe_vocab(["<|endoftext|>"], letters, words)
    specials = ["<|im_start|>", "<|im_end|>"]
    tok = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=specials,
        model_max_length=512,
    )
    tok.chat_template = _QWEN_CHAT_TEMPLATE
    return tok


def _flux_vae(latent_channels: int) -> Any:
    from diffusers import AutoencoderKL

    # four blocks: 2**(4-1) = 8, the VAE scale the Flux/Z-Image pipelines and families assume
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=4,
        sample_size=32,
        scaling_factor=0.3611,
        shift_factor=0.1159,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )


def _components(family: str, spec: Any, transformer: Any) -> dict[str, Any]:
    import transformers

    cfg = transformer.config
    if family == "flux":
        assert cfg.joint_attention_dim == cfg.pooled_projection_dim == TEXT_WIDTH
        tokenizer = _clip_tokenizer()
        text_encoder = transformers.CLIPTextModel(
            transformers.CLIPTextConfig(
                vocab_size=len(tokenizer),
                hidden_size=TEXT_WIDTH,
                intermediate_size=37,
                num_hidden_layers=1,
                num_attention_heads=2,
                max_position_embeddings=tokenizer.model_max_length,
                projection_dim=TEXT_WIDTH,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
        tokenizer_2 = _t5_tokenizer("T5TokenizerFast")
        text_encoder_2 = transformers.T5EncoderModel(
            transformers.T5Config(
                vocab_size=len(tokenizer_2),
                d_model=TEXT_WIDTH,
                d_kv=16,
                d_ff=37,
                num_layers=1,
                num_heads=2,
                relative_attention_num_buckets=8,
                pad_token_id=tokenizer_2.pad_token_id,
                eos_token_id=tokenizer_2.eos_token_id,
                decoder_start_token_id=tokenizer_2.pad_token_id,
            )
        )
        return {
            "tokenizer": tokenizer,
            "text_encoder": text_encoder,
            "tokenizer_2": tokenizer_2,
            "text_encoder_2": text_encoder_2,
            "vae": _flux_vae(cfg.in_channels // 4),  # the transformer sees 2×2-packed latents
        }
    if family == "zimage":
        assert cfg.cap_feat_dim == TEXT_WIDTH
        tokenizer = _qwen_tokenizer()
        text_encoder = transformers.Qwen3Model(
            transformers.Qwen3Config(
                vocab_size=len(tokenizer),
                hidden_size=TEXT_WIDTH,
                intermediate_size=37,
                num_hidden_layers=2,  # the pipeline reads hidden_states[-2]
                num_attention_heads=2,
                num_key_value_heads=1,
                head_dim=16,
                max_position_embeddings=512,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        )
        return {"tokenizer": tokenizer, "text_encoder": text_encoder, "vae": _flux_vae(cfg.in_channels)}
    if family == "wan":
        from diffusers import AutoencoderKLWan

        assert cfg.text_dim == TEXT_WIDTH
        tokenizer = _t5_tokenizer("T5TokenizerFast")
        text_encoder = transformers.UMT5EncoderModel(
            transformers.UMT5Config(
                vocab_size=len(tokenizer),
                d_model=TEXT_WIDTH,
                d_kv=16,
                d_ff=37,
                num_layers=1,
                num_heads=2,
                relative_attention_num_buckets=8,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
                decoder_start_token_id=tokenizer.pad_token_id,
            )
        )
        z = cfg.in_channels
        vae = AutoencoderKLWan(
            base_dim=4,
            z_dim=z,
            dim_mult=[1, 1, 1, 1],
            num_res_blocks=1,
            temperal_downsample=[False, True, True],
            latents_mean=[0.0] * z,
            latents_std=[1.0] * z,
        )
        return {"tokenizer": tokenizer, "text_encoder": text_encoder, "vae": vae}
    raise ValueError(f"unknown family {family!r}; expected one of {', '.join(_TINY_SPECS)}")


def save_tiny_pipeline(family: str, root: pathlib.Path) -> pathlib.Path:
    """Build the tiny ``family`` pipeline ("flux", "zimage" or "wan"), ``save_pretrained`` it to
    ``root / family`` and return that folder. Weights are seeded (``torch.manual_seed(0)``)."""
    import diffusers

    from adatsq.core.models.registry import family_of, get_spec

    if family not in _TINY_SPECS:
        raise ValueError(f"unknown family {family!r}; expected one of {', '.join(_TINY_SPECS)}")
    spec = get_spec(_TINY_SPECS[family])
    fam = family_of(spec)
    transformer = fam.build_tiny(spec, seed=0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        parts = _components(family, spec, transformer)
        parts["scheduler"] = fam.make_scheduler(spec)
        pipe = getattr(diffusers, fam.pipeline_class)(transformer=transformer, **parts)
    for module in (v for v in parts.values() if isinstance(v, torch.nn.Module)):
        module.eval()
    out = pathlib.Path(root) / family
    pipe.save_pretrained(out)
    return out
