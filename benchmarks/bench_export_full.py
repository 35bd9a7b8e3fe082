"""Export stage at full size on the CPU: the flux-dev architecture, random W3 codes, ``export_onnx``.

    python3 benchmarks/bench_export_full.py [--model flux-dev] [--blocks N] [--bits 3] [--out DIR]

1. ``build`` (this process): the published architecture (``build_architecture``'s config) with parameters on
   the meta device; every quantized linear of the family inventory becomes a ``QuantLinear.from_packed``
   holding random packed codes and float16 scales of the right shapes (w``--bits``, the spec's group size), so
   no bf16/fp32 full weight ever exists; the kept layers (embedders, norms) get real random tensors in
   ``--keep-dtype`` (bfloat16 by default, as a quantize stage on the GPU stores them; the export reads them
   through a Cast to float32). Written like the quantize stage does: ``save_weight_store`` + ``transformer_config.json``.
2. ``export`` (a child process, so its peak RSS is its own): ``export_onnx`` with a schedule of two
   configurations (all-A4, all-A8), then the sizes of onnx/weights.safetensors and every config graph.

``--blocks N`` sets num_layers and num_single_layers to N (flux) when the full model does not fit here;
the numbers then scale to full size roughly in proportion to the block count. Prints one JSON record.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import torch
from torch import nn

GIB = 1024**3


def _maxrss_gib(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss * 1024 / GIB  # Linux: KiB


def _config(spec, blocks: int | None) -> dict:  # noqa: ANN001
    cfg = dict(spec.architecture_config)
    if blocks is not None:
        for key in ("num_layers", "num_single_layers"):
            if key in cfg:
                cfg[key] = blocks
    return cfg


def build(
    out: Path, model_name: str, blocks: int | None, bits: int, seed: int, keep_dtype: torch.dtype
) -> dict:
    from accelerate import init_empty_weights

    from adatsq.core.models.registry import family_of, get_spec
    from adatsq.passes.quant_linear import QuantLinear, rotation_blocks, set_submodule
    from adatsq.passes.weight_store import meta_tensors, save_weight_store
    from adatsq.plugins.formats import format_for_bits
    from adatsq.plugins.reference import effective_group

    t0 = time.perf_counter()
    spec = get_spec(model_name)
    family = family_of(spec)
    cfg = _config(spec, blocks)
    with init_empty_weights(include_buffers=False):
        model = family.build(cfg, device="cpu", seed=seed)
    inv = family.inventory(model)
    act = set(inv.act_layers)
    modules = dict(model.named_modules())
    fmt = format_for_bits(bits)
    g = torch.Generator().manual_seed(seed)
    n_params = 0
    for name in inv.quantized_layers:
        lin = modules[name]
        n, k = lin.out_features, lin.in_features
        n_params += n * k
        blocks = rotation_blocks(k, name in act, spec.group_size, True, family.input_split(model, name))
        g_k = effective_group(k, spec.group_size)
        parts = [
            (
                torch.randint(0, 256, (n, fmt.packed_bytes(1, w)), generator=g, dtype=torch.uint8),
                (torch.rand(n, w // g_k, generator=g) * 1e-2 + 1e-3).to(torch.float16),
            )
            for w in (blocks or (k,))
        ]
        bias = torch.randn(n, generator=g) * 1e-2 if lin.bias is not None else None
        q = QuantLinear.from_packed(
            *parts[0], bias, bits, spec.group_size, blocks is not None, k, act_quantized=name in act,
            blocks=blocks, more=parts[1:],
        )  # fmt: skip
        set_submodule(model, name, q)
    for mod in model.modules():  # the kept layers: real random float32 tensors
        for pname, p in list(mod._parameters.items()):
            if p is not None and p.is_meta:
                n_params += p.numel()
                mod._parameters[pname] = nn.Parameter(
                    (torch.randn(p.shape, generator=g) * 0.02).to(keep_dtype)
                )
    assert not meta_tensors(model), meta_tensors(model)[:3]
    t_build = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)
    save_weight_store(out / "weights.safetensors", model, {"adatsq.schedule_hash": "bench"})
    conf = dict(model.config)
    conf["_class_name"] = type(model).__name__
    plain = lambda v: list(v) if isinstance(v, (tuple, set, frozenset)) else str(v)  # noqa: E731
    (out / "transformer_config.json").write_text(
        json.dumps(conf, indent=2, sort_keys=True, default=plain) + "\n"
    )
    (out / "bench_layers.json").write_text(json.dumps({"act_layers": list(inv.act_layers)}))
    return {
        "params": n_params,
        "quantized_layers": len(inv.quantized_layers),
        "act_layers": len(inv.act_layers),
        "build_s": round(t_build, 1),
        "build_and_write_s": round(time.perf_counter() - t0, 1),
        "build_peak_rss_gib": round(_maxrss_gib(), 2),
    }


def export(out: Path, model_name: str) -> dict:
    from adatsq.core.layout import OutputLayout
    from adatsq.core.models.registry import get_spec
    from adatsq.export.onnx_export import export_onnx

    spec = get_spec(model_name)
    act = tuple(json.loads((out / "bench_layers.json").read_text())["act_layers"])
    # export_onnx reads model, act_layers, configs and resolution of the schedule
    schedule = types.SimpleNamespace(
        model=model_name,
        act_layers=act,
        configs=((4,) * len(act), (8,) * len(act)),
        resolution=spec.resolution,
    )
    t0 = time.perf_counter()
    export_onnx(OutputLayout(out), schedule, lambda m: print(m, file=sys.stderr))  # type: ignore[arg-type]
    wall = time.perf_counter() - t0
    onnx_dir = out / "onnx"
    graphs = {p.name: p.stat().st_size for p in sorted(onnx_dir.glob("config_*.onnx"))}
    return {
        "export_wall_s": round(wall, 1),
        "export_peak_rss_gib": round(_maxrss_gib(), 2),
        "weights_bytes": (onnx_dir / "weights.safetensors").stat().st_size,
        "graph_bytes": graphs,
        "graph_max_mib": round(max(graphs.values()) / 2**20, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="flux-dev")
    ap.add_argument("--blocks", type=int, default=None, help="num_layers = num_single_layers = N")
    ap.add_argument("--bits", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--keep-dtype", choices=("bfloat16", "float32"), default="bfloat16",
        help="dtype of the kept (unquantized) parameters in the store: bfloat16 as a GPU quantize writes them",
    )  # fmt: skip
    ap.add_argument("--out", type=Path, default=None, help="output directory (default: a temporary one)")
    ap.add_argument("--stage", choices=("all", "build", "export"), default="all")
    a = ap.parse_args()
    tmp = None
    if a.out is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_export_")
        a.out = Path(tmp.name)
    record: dict = {"model": a.model, "blocks": a.blocks, "w_bits": a.bits, "keep_dtype": a.keep_dtype}
    if a.stage in ("all", "build"):
        record.update(build(a.out, a.model, a.blocks, a.bits, a.seed, getattr(torch, a.keep_dtype)))
    if a.stage == "export":
        print(json.dumps(export(a.out, a.model)))
        return
    if a.stage == "all":
        cmd = [sys.executable, __file__, "--stage", "export", "--model", a.model, "--out", str(a.out)]
        res = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)
        record.update(json.loads(res.stdout.strip().splitlines()[-1]))
        record["export_child_peak_rss_gib"] = round(_maxrss_gib(resource.RUSAGE_CHILDREN), 2)
    print(json.dumps(record, indent=1))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
