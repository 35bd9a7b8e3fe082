"""Which scaled-dot-product-attention backend runs Flux-dev's bf16 backward on this GPU.

    SDP=cudnn python benchmarks/diag_sdpa_backward.py     # SDP: math | efficient | flash | cudnn

Builds flux-dev with random weights on the GPU, records a 2-step trajectory at 512² and back-propagates the
flow-matching loss of step 0 to the first 50 quantized weights with only the chosen SDPA backend enabled.
On the H200 (torch 2.11, CUDA 13, 2026-12-02) cudnn fails (CUBLAS_STATUS_EXECUTION_FAILED); the others pass.
"""

from __future__ import annotations

import os

import torch

from adatsq.calib.calibrate import record_trajectories
from adatsq.core.models.registry import build_architecture, family_of, get_spec


def main() -> None:
    backend = os.environ.get("SDP", "cudnn")
    torch.backends.cuda.enable_flash_sdp(backend == "flash")
    torch.backends.cuda.enable_mem_efficient_sdp(backend == "efficient")
    torch.backends.cuda.enable_cudnn_sdp(backend == "cudnn")
    torch.backends.cuda.enable_math_sdp(backend == "math")
    spec = get_spec("flux-dev")
    fam = family_of(spec)
    model = build_architecture(spec, device="cuda", seed=0, dtype=torch.bfloat16)
    layers = list(fam.inventory(model).quantized_layers)
    g = torch.Generator().manual_seed(0)
    cond = fam.synthetic_conditioning(spec, model, 1, g)
    noise = fam.sample_noise(spec, model, (512, 512), 1, g)
    ts, latents, _outputs, final = record_trajectories(fam, spec, model, noise, cond, 2)
    for p in model.parameters():
        p.requires_grad_(False)
    modules = dict(model.named_modules())
    weights = [modules[n].weight.requires_grad_(True) for n in layers[:50]]
    t = fam.scheduler_timestep(ts[0]).cuda()
    v = fam.velocity(model, latents[0].cuda(), t, cond.to("cuda"), spec)
    loss = (v.float() - (noise - final).cuda()).pow(2).mean()
    torch.autograd.grad(loss, weights)
    torch.cuda.synchronize()
    print(f"{backend}: backward ok")


if __name__ == "__main__":
    main()
