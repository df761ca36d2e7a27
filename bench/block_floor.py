#!/usr/bin/env python3
"""The floor under any implementation of one full-size block on this machine: how long its matrix
products take when nothing else runs, so that a target ratio against PyTorch can be checked against what
the hardware allows (docs/PERFORMANCE.md, "What the targets ask of this machine").

  linears  the block's seven products (q, k, v, out: [T,3840]x[3840,3840]; w1, w3: [T,3840]x[3840,10240];
           w2: [T,10240]x[10240,3840]) timed alone through PyTorch's own matmul (oneDNN for bf16, its BLAS for
           f32; faster per product than zlora's, which converts fp32 activations): forward x*W^T and the
           input gradient dy*W, each the minimum of several runs;
  attention its products counted in FLOPs (forward 2, FlashAttention-2 backward 5 products of T x T x 128
           per head, 30 heads) and charged at the measured peak of this machine's arithmetic (bf16
           dot products 437 GFLOP/s, fp32 FMA 225; PERFORMANCE.md "Peak numbers"): no real kernel reaches it.
Norms, RoPE, SwiGLU, residuals, LoRA branches and conversions are charged nothing.

usage: block_floor.py [--tokens 1024 4096] [--threads N] [--peak-bf16 437] [--peak-f32 225]
prints one JSON line per (tokens, dtype): seconds for the forward's linears, the input gradients'
linears, the attention at peak, and the floors of a forward, of a training step without recomputation
(forward + backward) and of a checkpointed one (one more forward).
"""
import argparse, json, os, time
import torch

D, F, H, HD = 3840, 10240, 30, 128
SHAPES = [(D, D)] * 4 + [(F, D)] * 2 + [(D, F)]  # (out, in) of q, k, v, out, w1, w3, w2


def best(f, reps):
    f()
    t = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        f()
        t = min(t, time.perf_counter() - t0)
    return t


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tokens", type=int, nargs="+", default=[1024, 4096])
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--reps", type=int, default=4)
    p.add_argument("--peak-bf16", type=float, default=437.0)
    p.add_argument("--peak-f32", type=float, default=225.0)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    g = torch.Generator().manual_seed(0)
    for T in a.tokens:
        for name, dt, peak in (("bf16", torch.bfloat16, a.peak_bf16), ("f32", torch.float32, a.peak_f32)):
            fwd = dx = 0.0
            for o, i in SHAPES:
                W = (torch.randn(o, i, generator=g) * i ** -0.5).to(dt)
                x = torch.randn(T, i, generator=g).to(dt)
                dy = torch.randn(T, o, generator=g).to(dt)
                fwd += best(lambda: x @ W.t(), a.reps)
                dx += best(lambda: dy @ W, a.reps)
            unit = 2.0 * T * T * HD * H  # one T x T x 128 product over all heads, FLOPs
            att_f, att_b = 2 * unit / (peak * 1e9), 5 * unit / (peak * 1e9)
            print(json.dumps({
                "tokens": T, "dtype": name, "threads": a.threads,
                "linears_fwd_s": round(fwd, 4), "linears_dx_s": round(dx, 4),
                "attention_fwd_at_peak_s": round(att_f, 4), "attention_bwd_at_peak_s": round(att_b, 4),
                "floor_forward_s": round(fwd + att_f, 4),
                "floor_step_s": round(fwd + dx + att_f + att_b, 4),
                "floor_checkpointed_step_s": round(2 * fwd + dx + 2 * att_f + att_b, 4),
            }), flush=True)


if __name__ == "__main__":
    main()
