"""Weight-only (a = 16) layers on the GPU: the packed-weight GEMV kernel vs what it replaced and vs bf16.

The adaLN-modulation / embedder linears see one vector per sample (M = batch). Shapes are Flux-dev's
(K, N): norm1.linear (3072, 18432), single-block norm (3072, 9216), time embedder (256, 3072), and Wan's
time projection (1536, 9216). Contenders, median ms of CUDA-graph replays (triton.testing.do_bench_cudagraph):
our GEMV on packed int3 / int4 weights; the previous path (unpack + dequantize + fp32 matmul, i.e. the
reference on the GPU); torch bf16 ``F.linear`` on the dense weight (cuBLAS). Bytes read by each are listed,
since the op is memory bound.

    python benchmarks/bench_weight_only.py --out $OUT
"""

from __future__ import annotations

import argparse
import datetime
import json
import pathlib

import torch
import torch.nn.functional as F

SHAPES_KN = ((3072, 18432), (3072, 9216), (256, 3072), (1536, 9216))
MS = (1, 2, 8)
G = 128


def bench(fn) -> float:  # noqa: ANN001
    import triton.testing

    fn()
    torch.cuda.synchronize()
    return float(triton.testing.do_bench_cudagraph(fn, rep=50))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=pathlib.Path, required=True)
    args = ap.parse_args()
    from adatsq.plugins.formats import format_for_bits
    from adatsq.plugins.kernels.api import weight_only_gemv
    from adatsq.plugins.reference import dequantize_weight, qlinear_reference_packed, quantize_weight_rtn

    rows = []
    for k, n in SHAPES_KN:
        w = torch.randn(n, k)
        dense = w.to("cuda", torch.bfloat16)
        for w_bits in (3, 4):
            codes, scale = quantize_weight_rtn(w, w_bits, G)
            packed = format_for_bits(w_bits).pack(codes).cuda()
            s_w = scale.cuda()
            deq = dequantize_weight(codes, scale).to("cuda", torch.bfloat16)
            for m in MS:
                x = torch.randn(m, k, device="cuda")
                xb = x.bfloat16()
                ours = bench(lambda x=x, p=packed, s=s_w, b=w_bits: weight_only_gemv(x, p, b, s, None, G))
                ours16 = bench(lambda x=xb, p=packed, s=s_w, b=w_bits: weight_only_gemv(x, p, b, s, None, G))
                # the same bf16 x 2 bytes off a 16-byte boundary: the kernel's host check takes the generic
                # (byte-load) kernel, the one the vectorized kernel replaced
                xm = torch.empty(m * k + 8, device="cuda", dtype=torch.bfloat16)[1 : 1 + m * k].view(m, k)
                xm.copy_(xb)
                generic = bench(lambda x=xm, p=packed, s=s_w, b=w_bits: weight_only_gemv(x, p, b, s, None, G))
                prev = bench(
                    lambda x=x, p=packed, s=s_w, b=w_bits: qlinear_reference_packed(
                        x, p, s, None, 16, b, G, False
                    )
                )
                bf16 = bench(lambda xb=xb, d=dense: F.linear(xb, d))
                y = weight_only_gemv(x, packed, w_bits, s_w, None, G)
                err = float((y - x @ deq.float().t()).norm() / (x @ deq.float().t()).norm())
                rows.append(
                    dict(K=k, N=n, M=m, w_bits=w_bits, ours_ms=ours, ours_bf16x_ms=ours16, generic_bf16x_ms=generic,
                         reference_path_ms=prev, bf16_ms=bf16,
                         packed_MB=packed.numel() / 1e6, bf16_MB=dense.numel() * 2 / 1e6,
                         ours_GBps=packed.numel() / (ours * 1e-3) / 1e9, rel_err_vs_dequant=err)
                )  # fmt: skip
                r = rows[-1]
                print(
                    f"K={k:5d} N={n:5d} M={m} w{w_bits}: ours {ours * 1e3:7.1f} us ({r['ours_GBps']:6.0f} GB/s), "
                    f"bf16 x {ours16 * 1e3:7.1f} us, generic kernel {generic * 1e3:7.1f} us | "
                    f"reference path {prev * 1e3:8.1f} us | bf16 cuBLAS {bf16 * 1e3:7.1f} us | err {err:.1e}"
                )
    args.out.mkdir(parents=True, exist_ok=True)
    meta = dict(
        date=datetime.date.today().isoformat(), gpu=torch.cuda.get_device_name(), torch=torch.__version__
    )
    (args.out / "bench_weight_only.json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))


if __name__ == "__main__":
    main()
