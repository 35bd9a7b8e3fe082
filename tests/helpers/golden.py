"""Golden checks of an exported tiny-flux output directory in ONNX Runtime against the torch QuantLinear model
(the certification of :mod:`helpers.ties`): per configuration graph, the output equals torch's on the same
inputs or differs by certified tie flips only, and at every activation-quantized node the function body's
codes equal the reference quantizer's on the node's own input except for tie flips.

Used by tests/unit/export/test_onnx_export.py (every family) and tests/unit/compiler/test_methods_golden.py
(the methods of issue 15)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from adatsq.core.layout import OutputLayout
from adatsq.core.models import family_of, get_spec
from adatsq.core.schedule import load_schedule
from adatsq.export.graph_io import adapter_for
from adatsq.export.onnx_export import load_quantized_model
from adatsq.passes.quant_linear import quant_linears, set_activation_bits
from adatsq.plugins.hadamard import rotate_blocks
from helpers.ort_session import ort_session
from helpers.runs import tapped_session
from helpers.ties import Certificate, certify_outputs, check_code_flips, max_flips, reference_codes

__all__ = [
    "assert_golden_flux",
    "check",
    "config_graphs",
    "flux_kwargs",
    "golden",
    "wan_kwargs",
    "zimage_kwargs",
]


def flux_kwargs(model: torch.nn.Module) -> dict:
    """Transformer inputs of tiny-flux (and shapes-flux): 3 samples, 60 image tokens (not the calibration's 64), 11 text tokens."""
    from adatsq.core.models.flux import image_ids, pack

    g = torch.Generator().manual_seed(11)
    b, c, h, w = 3, model.config.in_channels // 4, 12, 20
    kwargs = dict(
        hidden_states=pack(torch.randn(b, c, h, w, generator=g)),
        timestep=torch.tensor([0.9, 0.5, 0.1]),
        pooled_projections=torch.randn(b, model.config.pooled_projection_dim, generator=g),
        encoder_hidden_states=torch.randn(b, 11, model.config.joint_attention_dim, generator=g),
        txt_ids=torch.zeros(11, 3),
        img_ids=image_ids(h, w),
    )
    if model.config.guidance_embeds:  # Flux-dev's guidance distillation; shapes-flux has none
        kwargs["guidance"] = torch.full((b,), 3.5)
    return kwargs


def config_graphs(out: Path) -> list[Path]:
    """The ONNX Runtime graphs config_NN.onnx (not their TensorRT twins config_NN.trt.onnx)."""
    return [p for _, p in OutputLayout(out).onnx_graphs()]


def wan_kwargs(model: torch.nn.Module) -> dict:
    """Transformer inputs of tiny-wan: 3 samples of 3×6×10 latents, 9 text tokens."""
    g = torch.Generator().manual_seed(12)
    return dict(
        hidden_states=torch.randn(3, model.config.in_channels, 3, 6, 10, generator=g),
        timestep=torch.tensor([999, 500, 20]),
        encoder_hidden_states=torch.randn(3, 9, model.config.text_dim, generator=g),
    )


def zimage_kwargs(model: torch.nn.Module) -> dict:
    # 5×7 = 35 image tokens (padded to 64 with x_pad_token) and 11 caption tokens (padded to 32): neither
    # is the calibration's 64 image / 16 caption tokens, so the dynamic dims and the padding are exercised.
    g = torch.Generator().manual_seed(13)
    c, d = model.config.in_channels, model.config.cap_feat_dim
    return dict(
        x=[torch.randn(c, 1, 10, 14, generator=g) for _ in range(3)],
        t=torch.tensor([0.1, 0.5, 0.95]),
        cap_feats=[torch.randn(11, d, generator=g) for _ in range(3)],
    )


def golden(out: Path, make_kwargs=flux_kwargs) -> list[tuple[int, Certificate, int, int]]:  # noqa: ANN001
    """Per configuration: the output certificate vs torch, and the body's code flips / codes over all nodes."""
    s = load_schedule(out / "schedule.json")
    model = load_quantized_model(out)
    modules = quant_linears(model)
    adapter = adapter_for(family_of(get_spec(s.model)).name)
    kwargs = make_kwargs(model)
    feeds = adapter.feeds(model.config, kwargs)
    results = []
    for k, path in enumerate(config_graphs(out)):
        bits = dict(zip(s.act_layers, s.configs[k], strict=True))

        def run_torch(bits: dict[str, int] = bits) -> np.ndarray:
            set_activation_bits(model, bits, modules)
            with torch.no_grad():
                ref = model(**kwargs, return_dict=False)[0]
            return (torch.stack(ref) if isinstance(ref, list) else ref).numpy()  # Z-Image: list per sample

        y = ort_session(path).run(None, feeds)[0]
        y_tap, layers = tapped_session(path).run(feeds)
        cert = certify_outputs(
            y,
            run_torch,
            modules,
            lambda y_tap=y_tap, layers=layers: (y_tap, layers),
            f"{out.name} {path.name}",
        )
        flipped = total = 0
        for name, (x, codes) in layers.items():
            mod = modules[name]
            x2 = torch.from_numpy(x).reshape(-1, mod.in_features).float()
            q_ref, _, ratios = reference_codes(
                rotate_blocks(x2, mod.blocks) if mod.rotate_input else x2, bits[name], mod.group_size
            )
            flipped += len(check_code_flips(q_ref, ratios, codes, bits[name], f"{path.name} body at {name}"))
            total += q_ref.numel()
        results.append((k, cert, flipped, total))
    return results


def check(results: list[tuple[int, Certificate, int, int]]) -> None:
    """Each configuration certified (:func:`golden` raises otherwise) and its body's code flips within
    :func:`helpers.ties.max_flips`."""
    for k, cert, flipped, total in results:
        flips = "; ".join(map(str, cert.flips)) or "none"
        print(
            f"config {k:02d}: rel err {cert.err:.2e} (certified tie flips: {flips}; aligned {cert.residual:.1e}), "
            f"body code flips {flipped}/{total}"
        )
        assert total > 0 and flipped <= max_flips(total)


def assert_golden_flux(out: Path) -> None:
    check(golden(out))
