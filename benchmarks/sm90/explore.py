"""Check and time CUTLASS sm90 blockwise-FP8 configurations (benchmarks/sm90/configs.cu, one .so each).

Run on the GPU machine from the repository root, with libadatsq_kernels.so at $ADATSQ_KERNELS_LIB:

    python benchmarks/sm90/explore.py --lib-dir DIR --out $OUT

DIR holds ``<Config>_<bf16|f32>.so``. For every configuration: the output against a float64 reference of
the same codes and scales (fp32 output: relative error; bf16: bf16 rounding), then the median time of
CUDA-graph replays on the issue's ten shapes next to cuBLAS bf16 and FP8 (per-tensor scaling). Also times
the weight preparation the packed variant runs per call (int4/int3 expansion to e4m3, scale transpose).
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import json
import os
import pathlib

import torch
import triton.testing

from adatsq.plugins.kernels import cuda_lib

FP8 = torch.float8_e4m3fn
SHAPES = [(m, k, n) for m in (1024, 4608) for (k, n) in
          ((3072, 3072), (3072, 12288), (12288, 3072), (15360, 3072), (3072, 18432))]  # fmt: skip


def codes(rows: int, cols: int, lo: int, hi: int) -> torch.Tensor:
    return torch.randint(lo, hi + 1, (rows, cols), device="cuda").float()


def problem(m: int, k: int, n: int, bits: int = 4, extreme: bool = False) -> dict[str, torch.Tensor]:
    """Random signed ``bits``-bit codes (``extreme``: every code the most negative one, the largest 128-deep
    partial)."""
    g = k // 128
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    qx, qw = (torch.full((m, k), float(lo), device="cuda"), torch.full((n, k), float(lo), device="cuda")) if extreme \
        else (codes(m, k, lo, hi), codes(n, k, lo, hi))  # fmt: skip
    return {
        "qx": qx, "qw": qw,
        "sx": torch.rand(g, m, device="cuda") * 1e-2 + 1e-3, "sw": torch.rand(g, n, device="cuda") * 1e-2 + 1e-3,
        "b": torch.randn(n, device="cuda"),
    }  # fmt: skip


def reference(p: dict[str, torch.Tensor]) -> torch.Tensor:
    qx, qw = p["qx"].double(), p["qw"].double()
    m, k = qx.shape
    y = torch.zeros(m, qw.shape[0], dtype=torch.float64, device="cuda")
    for g in range(k // 128):
        part = qx[:, g * 128 : (g + 1) * 128] @ qw[:, g * 128 : (g + 1) * 128].T
        y += part * p["sx"][g].double()[:, None] * p["sw"][g].double()[None, :]
    return y + p["b"].double()


class Config:
    def __init__(self, path: pathlib.Path) -> None:
        self.name = path.stem
        self.so = ctypes.CDLL(str(path))
        vp, i32 = ctypes.c_void_p, ctypes.c_int
        self.so.cfg_run.argtypes = [vp, vp, vp, vp, vp, vp, i32, i32, i32, vp, ctypes.c_size_t, vp]
        self.so.cfg_workspace.argtypes = [i32, i32, i32, ctypes.POINTER(ctypes.c_size_t)]
        self.out_dtype = torch.float32 if path.stem.endswith("_f32") else torch.bfloat16

    def runner(self, p: dict[str, torch.Tensor]):  # noqa: ANN201
        m, k = p["qx"].shape
        n = p["qw"].shape[0]
        q, w = p["qx"].to(FP8), p["qw"].to(FP8)
        y = torch.full((m, n), float("nan"), device="cuda", dtype=self.out_dtype)
        nbytes = ctypes.c_size_t(0)
        cuda_lib.check(self.so.cfg_workspace(m, n, k, ctypes.byref(nbytes)), f"{self.name} workspace")
        ws = torch.empty(max(nbytes.value, 1), dtype=torch.uint8, device="cuda")

        def run() -> torch.Tensor:
            code = self.so.cfg_run(q.data_ptr(), p["sx"].data_ptr(), w.data_ptr(), p["sw"].data_ptr(),
                                   p["b"].data_ptr(), y.data_ptr(), m, n, k, ws.data_ptr(), nbytes.value,
                                   torch.cuda.current_stream().cuda_stream)  # fmt: skip
            cuda_lib.check(code, self.name)
            return y

        return run


class Ours(Config):
    """adatsq_qgemm_wgmma of raw_wgmma.so (benchmarks/sm90/qgemm_raw_wgmma.cu, the hand-written kernel)."""

    def __init__(self, so: ctypes.CDLL, out_dtype: torch.dtype, single_t: bool = False) -> None:
        self.so = so
        self.single_t = single_t
        self.name = f"ours{'_single_t' if single_t else ''}_{'f32' if out_dtype == torch.float32 else 'bf16'}"
        self.out_dtype = out_dtype

    def runner(self, p: dict[str, torch.Tensor]):  # noqa: ANN201
        m, k = p["qx"].shape
        n = p["qw"].shape[0]
        q, w = p["qx"].to(FP8), p["qw"].to(FP8)
        y = torch.full((m, n), float("nan"), device="cuda", dtype=self.out_dtype)
        code = cuda_lib.DTYPE_CODE[self.out_dtype]

        def run() -> torch.Tensor:
            if self.single_t:
                os.environ["ADATSQ_WGMMA_SINGLE_T"] = "1"
            else:
                os.environ.pop("ADATSQ_WGMMA_SINGLE_T", None)
            err = self.so.adatsq_qgemm_wgmma(q.data_ptr(), p["sx"].data_ptr(), w.data_ptr(),
                                                    p["sw"].data_ptr(), p["b"].data_ptr(), y.data_ptr(), code,
                                                    m, n, k, torch.cuda.current_stream().cuda_stream)  # fmt: skip
            cuda_lib.check(err, self.name)
            return y

        return run


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b).norm() / b.norm())


def bench(fn) -> float:  # noqa: ANN001
    return float(triton.testing.do_bench_cudagraph(fn, rep=200, return_mode="median"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib-dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", action="store_true", help="M = 4608 shapes, one check shape, no weight prep")
    ap.add_argument("--codes", type=int, default=4, choices=(3, 4), help="code bits of both operands")
    args = ap.parse_args()
    torch.manual_seed(0)
    lib_dir = pathlib.Path(args.lib_dir)
    configs: list[Config] = []
    if (lib_dir / "raw_wgmma.so").is_file():
        raw = ctypes.CDLL(str(lib_dir / "raw_wgmma.so"))
        vp, i64 = ctypes.c_void_p, ctypes.c_int64
        raw.adatsq_qgemm_wgmma.argtypes = [vp, vp, vp, vp, vp, vp, ctypes.c_int, i64, i64, i64, vp]
        configs += [
            Ours(raw, dt, single) for single in (False, True) for dt in (torch.float32, torch.bfloat16)
        ]
    configs += [Config(p) for p in sorted(lib_dir.glob("*.so")) if p.name != "raw_wgmma.so"]
    out: dict[str, object] = {"device": torch.cuda.get_device_name(), "check": {}, "time": {}}
    for c in configs:  # correctness: odd M, every K of the image models' GEMMs
        checks = ((300, 3072, 3072), (77, 15360, 3072), (1000, 12288, 256), (4608, 3072, 12288))
        for (m, k, n), extreme in [(s, False) for s in (checks[:1] if args.quick else checks)] + [
            ((256, 3072, 512), True)
        ]:
            p = problem(m, k, n, args.codes, extreme)
            y = c.runner(p)()
            torch.cuda.synchronize()
            err = rel(y, reference(p))
            tag = f"{m}x{k}x{n}{' extreme' if extreme else ''}"
            out["check"][f"{c.name} {tag}"] = err  # type: ignore[index]
            print(f"check {c.name:28s} {tag}: rel err {err:.2e} nan={bool(y.isnan().any())}", flush=True)
    lib = cuda_lib.lib()
    for m, k, n in [s for s in SHAPES if s[0] == 4608] if args.quick else SHAPES:
        p = problem(m, k, n, args.codes)
        row: dict[str, float] = {}
        xb, wb = p["qx"].bfloat16(), p["qw"].bfloat16()
        row["bf16"] = bench(functools.partial(torch.nn.functional.linear, xb, wb))
        q8, w8 = p["qx"].to(FP8), p["qw"].to(FP8)
        one = torch.ones((), device="cuda")
        for fast in (False, True):
            row[f"fp8_cublas{'_fast' if fast else ''}"] = bench(
                functools.partial(
                    torch._scaled_mm, q8, w8.T, one, one, out_dtype=torch.bfloat16, use_fast_accum=fast
                )  # fmt: skip
            )
        for c in configs:
            if c.out_dtype == torch.bfloat16:
                row[c.name] = bench(c.runner(p))
        # weight preparation of the packed variant: expansion to e4m3 and the scale transpose
        from adatsq.plugins.formats import format_for_bits

        for bits in () if args.quick else (4, 3):
            fmt = format_for_bits(bits)
            qw = p["qw"].clamp(fmt.qmin, fmt.qmax)
            packed = fmt.pack(qw.cpu().to(torch.int8)).cuda()
            dst = torch.empty((n, k), dtype=FP8, device="cuda")
            # the stream is read at call time: do_bench_cudagraph captures on its own stream
            row[f"expand_int{bits}"] = bench(
                lambda packed=packed, bits=bits, dst=dst, n=n, k=k: lib.adatsq_expand_weight(
                    packed.data_ptr(), bits, n, k, 1, dst.data_ptr(), torch.cuda.current_stream().cuda_stream
                )
            )
            ok = torch.equal(dst.float(), qw)
            row[f"expand_int{bits}_exact"] = float(ok)
        s16 = p["sw"].T.contiguous().half()
        s32 = torch.empty_like(p["sw"])
        row["scales"] = bench(
            lambda s16=s16, s32=s32, n=n, k=k: lib.adatsq_weight_scales_gmajor(
                s16.data_ptr(), n, k // 128, s32.data_ptr(), torch.cuda.current_stream().cuda_stream
            )
        )
        out["time"][f"{m}x{k}x{n}"] = row  # type: ignore[index]
        flop = 2 * m * n * k
        line = "  ".join(
            f"{key}={v:.4f}ms/{flop / v / 1e9:.0f}" for key, v in row.items() if "exact" not in key
        )
        print(f"{m}x{k}x{n}: {line}", flush=True)
    pathlib.Path(args.out).mkdir(parents=True, exist_ok=True)
    (pathlib.Path(args.out) / "sm90_explore.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
