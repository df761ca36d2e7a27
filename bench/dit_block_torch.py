#!/usr/bin/env python3
"""One full-size Z-Image block (dim 3840, FFN 10240, 30 heads of 128) forward in PyTorch, the
comparison point for `zlora bench dit-block`. Same math as src/model/zimage.c (RMSNorm, 1+scale
modulation, q/k norms, interleaved 3-axis RoPE, non-causal attention, sandwich norms, tanh gates,
SwiGLU). torch 1.13 (Debian) has no fused attention: it builds the T x T score matrix.

usage: dit_block_torch.py --tokens T --dtype f32|bf16 [--iters N] [--threads N]   (prints one JSON line)
"""
import argparse, json, math, resource, time
import torch

p = argparse.ArgumentParser()
p.add_argument("--tokens", type=int, default=1024)
p.add_argument("--dtype", choices=["f32", "bf16"], default="bf16")
p.add_argument("--iters", type=int, default=3)
p.add_argument("--threads", type=int, default=0)
a = p.parse_args()
if a.threads:
    torch.set_num_threads(a.threads)
dt = torch.float32 if a.dtype == "f32" else torch.bfloat16
D, F, H, HD, ADA, T = 3840, 10240, 30, 128, 256, a.tokens
g = torch.Generator().manual_seed(0)

def lin(o, i):
    return ((torch.rand(o, i, generator=g) * 2 - 1) / math.sqrt(i)).to(dt)

W = {k: lin(*s) for k, s in dict(q=(D, D), k=(D, D), v=(D, D), o=(D, D), w1=(F, D), w2=(D, F), w3=(F, D), ada=(4 * D, ADA)).items()}
nq = torch.ones(HD, dtype=dt); nk = torch.ones(HD, dtype=dt)
n1 = torch.ones(D, dtype=dt); n2 = torch.ones(D, dtype=dt); n3 = torch.ones(D, dtype=dt); n4 = torch.ones(D, dtype=dt)
x0 = torch.randn(T, D, generator=g).to(dt)
c = torch.ones(ADA, dtype=dt)
side = math.ceil(math.sqrt(T))
ids = torch.tensor([[33, i // side, i % side] for i in range(T)], dtype=torch.float64)
angles = []
for ax, d in enumerate([32, 48, 48]):
    freq = 1.0 / (256.0 ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    angles.append(ids[:, ax:ax + 1] * freq[None])
ang = torch.cat(angles, 1).float()
cos, sin = ang.cos().to(dt), ang.sin().to(dt)

def rms(x, w, eps=1e-5):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w

def rope(x):  # x [T, H, HD], interleaved pairs
    x0, x1 = x[..., 0::2], x[..., 1::2]
    cs, sn = cos[:, None], sin[:, None]
    return torch.stack([x0 * cs - x1 * sn, x0 * sn + x1 * cs], -1).flatten(-2)

def block(x):
    m = W["ada"] @ c
    sm, gm, sf, gf = m.chunk(4)
    a = rms(x, n1) * (1 + sm)
    q = rope(rms((a @ W["q"].T).view(T, H, HD), nq)).transpose(0, 1)
    k = rope(rms((a @ W["k"].T).view(T, H, HD), nk)).transpose(0, 1)
    v = (a @ W["v"].T).view(T, H, HD).transpose(0, 1)
    s = torch.softmax((q @ k.transpose(1, 2)) / math.sqrt(HD), -1)
    o = (s @ v).transpose(0, 1).reshape(T, D) @ W["o"].T
    x = x + torch.tanh(gm) * rms(o, n2)
    f = rms(x, n3) * (1 + sf)
    f = (torch.nn.functional.silu(f @ W["w1"].T) * (f @ W["w3"].T)) @ W["w2"].T
    return x + torch.tanh(gf) * rms(f, n4)

times = []
with torch.no_grad():
    for it in range(a.iters + 1):
        t0 = time.perf_counter()
        block(x0.clone())
        times.append(time.perf_counter() - t0)
med = sorted(times[1:])[len(times[1:]) // 2]
flops = 2 * T * (4 * D * D + 3 * D * F) + 4 * T * T * D
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(dict(bench="dit-block-torch", tokens=T, dtype=a.dtype, seconds=round(med, 4),
                      gflops=round(flops / med * 1e-9, 1), peak_rss_mb=round(rss), threads=torch.get_num_threads(),
                      torch=torch.__version__)))
