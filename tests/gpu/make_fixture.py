"""Build the compiled fixture of tests/gpu/test_runner_gpu.py on the CPU (about a minute).

A FluxTransformer2DModel of width 256 (2 heads × 128, FFN 1024, 1 + 1 blocks, random weights, seed 0),
saved with save_pretrained and compiled at 3.5 bits with group 128, so every layer's width is one the GPU
kernels take:

    python tests/gpu/make_fixture.py [OUT]     (default gpu_fixture/medium-flux)
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import torch


def main(out: Path) -> None:
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    model = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=128,
        num_attention_heads=2, joint_attention_dim=64, pooled_projection_dim=64, guidance_embeds=True,
        axes_dims_rope=[16, 56, 56],
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as ckpt:
        model.save_pretrained(ckpt)
        subprocess.run(
            ["adatsq-compile", "tiny-flux", "--model-path", ckpt, "--target", "3.5", "--group-size", "128",
             "--steps", "4", "--calib-samples", "2", "-o", str(out), "--until", "export"],
            check=True,
        )  # fmt: skip


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "gpu_fixture/medium-flux"))
