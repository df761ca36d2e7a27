#!/usr/bin/env python3
"""One full-size Z-Image block (dim 3840, FFN 10240, 30 heads of 128) forward in PyTorch, the
comparison point for `zlora bench dit-block`. Same math as src/model/zimage.c (RMSNorm, 1+scale
modulation, q/k norms, interleaved 3-axis RoPE, non-causal attention, sandwich norms, tanh gates,
SwiGLU). torch 1.13 (Debian) has no fused attention: it builds the T x T score matrix.

usage: dit_block_torch.py --tokens T --dtype f32|bf16 [--iters N] [--threads N]   (prints one JSON line)
bench/train_block_torch.py imports the block from here (block(..., lin=...) adds LoRA branches).
"""
import argparse, json, math, resource, time
import torch

D, F, H, HD, ADA = 3840, 10240, 30, 128, 256


def rope_tables(T, dt, side=None):
    """cos, sin [T, HD/2] for tokens on a side x side grid (ids (33, i // side, i % side)), in dtype dt."""
    side = side or math.ceil(math.sqrt(T))
    ids = torch.tensor([[33, i // side, i % side] for i in range(T)], dtype=torch.float64)
    angles = []
    for ax, d in enumerate([32, 48, 48]):
        freq = 1.0 / (256.0 ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
        angles.append(ids[:, ax:ax + 1] * freq[None])
    ang = torch.cat(angles, 1).float()
    return ang.cos().to(dt), ang.sin().to(dt)


def rms(x, w, eps=1e-5):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rope(x, cos, sin):  # x [T, H, HD], interleaved pairs
    x0, x1 = x[..., 0::2], x[..., 1::2]
    cs, sn = cos[:, None], sin[:, None]
    return torch.stack([x0 * cs - x1 * sn, x0 * sn + x1 * cs], -1).flatten(-2)


def block(x, W, N, c, cos, sin, lin=None, heads=H, hd=HD):
    """The block on x [T, dim]: W {q,k,v,o,w1,w2,w3,ada: [out, in]}, N {q,k,n1..n4: norm weights}, c the
    adaLN input; lin(a, name) computes a @ W[name].T (plus whatever a caller adds: LoRA branches)."""
    lin = lin or (lambda a, name: a @ W[name].T)
    T = x.shape[0]
    m = W["ada"] @ c
    if "ada_b" in W:
        m = m + W["ada_b"]
    sm, gm, sf, gf = m.chunk(4)
    a = rms(x, N["n1"]) * (1 + sm)
    q = rope(rms(lin(a, "q").view(T, heads, hd), N["q"]), cos, sin).transpose(0, 1)
    k = rope(rms(lin(a, "k").view(T, heads, hd), N["k"]), cos, sin).transpose(0, 1)
    v = lin(a, "v").view(T, heads, hd).transpose(0, 1)
    s = torch.softmax((q @ k.transpose(1, 2)) / math.sqrt(hd), -1)
    o = lin((s @ v).transpose(0, 1).reshape(T, heads * hd), "o")
    x = x + torch.tanh(gm) * rms(o, N["n2"])
    f = rms(x, N["n3"]) * (1 + sf)
    f = lin(torch.nn.functional.silu(lin(f, "w1")) * lin(f, "w3"), "w2")
    return x + torch.tanh(gf) * rms(f, N["n4"])


def random_block(T, dt, g):
    """Random weights (uniform, 1/sqrt(in)), unit norms, x ~ N(0,1), c = 1, as the forward benchmark uses."""
    def lin(o, i):
        return ((torch.rand(o, i, generator=g) * 2 - 1) / math.sqrt(i)).to(dt)
    W = {k: lin(*s) for k, s in dict(q=(D, D), k=(D, D), v=(D, D), o=(D, D), w1=(F, D), w2=(D, F), w3=(F, D),
                                     ada=(4 * D, ADA)).items()}
    N = dict(q=torch.ones(HD, dtype=dt), k=torch.ones(HD, dtype=dt), n1=torch.ones(D, dtype=dt),
             n2=torch.ones(D, dtype=dt), n3=torch.ones(D, dtype=dt), n4=torch.ones(D, dtype=dt))
    x0 = torch.randn(T, D, generator=g).to(dt)
    c = torch.ones(ADA, dtype=dt)
    return W, N, x0, c


def flops(T):
    return 2 * T * (4 * D * D + 3 * D * F) + 4 * T * T * D


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--tokens", type=int, default=1024)
    p.add_argument("--dtype", choices=["f32", "bf16"], default="bf16")
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    dt = torch.float32 if a.dtype == "f32" else torch.bfloat16
    T = a.tokens
    W, N, x0, c = random_block(T, dt, torch.Generator().manual_seed(0))
    cos, sin = rope_tables(T, dt)
    times = []
    with torch.no_grad():
        for it in range(a.iters + 1):
            t0 = time.perf_counter()
            block(x0.clone(), W, N, c, cos, sin)
            times.append(time.perf_counter() - t0)
    med = sorted(times[1:])[len(times[1:]) // 2]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(dict(bench="dit-block-torch", tokens=T, dtype=a.dtype, seconds=round(med, 4),
                          gflops=round(flops(T) / med * 1e-9, 1), peak_rss_mb=round(rss), threads=torch.get_num_threads(),
                          torch=torch.__version__)))
