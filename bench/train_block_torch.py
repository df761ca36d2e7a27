#!/usr/bin/env python3
"""One full-size Z-Image block's LoRA training step in PyTorch autograd: the comparison point for
`zlora bench dit-block --backward` (bench/train_block.sh runs both). The block is bench/dit_block_torch.py's
(the forward benchmark's), with rank-R LoRA branches on q, k, v, out, w1, w2, w3 (alpha = rank: scale 1;
factors float32 leaves with requires_grad), base weights frozen, x requiring its gradient (a block inside
the model must pass it on), loss = sum(out * g) for a fixed random g, then loss.backward().

  --dtype f32       everything float32
  --dtype bf16      bf16 base weights and activations (as the forward benchmark's bf16), LoRA factors
                    float32 cast to bf16 inside the graph (their gradients arrive in float32)
  --dtype autocast  bf16 base weights, float32 activations, torch.autocast("cpu", torch.bfloat16)
  --checkpoint      torch.utils.checkpoint around the block: the forward keeps only its input and the
                    backward recomputes it (zlora's policy); without it autograd keeps every activation,
                    including the T x T attention probabilities (torch 1.13 has no fused attention)

usage: train_block_torch.py --tokens T --dtype f32|bf16|autocast [--rank R] [--iters N] [--threads N]
                            [--checkpoint]                      (prints one JSON line)
       train_block_torch.py --check DUMP.safetensors [--threads N]
         DUMP from `zlora bench dit-block --backward --dump DUMP` (a small block): recomputes the step in
         float64 with tests/ref/zimage_ref.py's block (the parity reference of the model; LoRA merged into
         the weights, W + up @ down, so its gradients come by another route) and prints the relative L2 error
         of zlora's output, input gradient, LoRA gradients and cond gradient against it, next to the errors
         of this script's own block in float32 and bf16 on the same weights (JSON, one line per row).
"""
import argparse, json, math, os, resource, sys, time
import torch
import torch.utils.checkpoint

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests", "ref"))
import dit_block_torch as B  # noqa: E402

LORA = ["q", "k", "v", "o", "w1", "w2", "w3"]
ZNAME = dict(q="attention.to_q", k="attention.to_k", v="attention.to_v", o="attention.to_out.0", w1="feed_forward.w1",
             w2="feed_forward.w2", w3="feed_forward.w3", ada="adaLN_modulation.0")
NNAME = dict(q="attention.norm_q", k="attention.norm_k", n1="attention_norm1", n2="attention_norm2", n3="ffn_norm1",
             n4="ffn_norm2")


def lora_lin(W, L, scale=1.0):
    """lin(a, name) for B.block: a @ W.T + scale * (a @ down.T) @ up.T, factors cast to a's dtype."""
    def lin(a, name):
        y = a @ W[name].T
        if name in L:
            dn, up = L[name]
            y = y + ((a @ dn.T.to(a.dtype)) @ up.T.to(a.dtype)) * scale
        return y
    return lin


def step_flops(T, D=B.D, F=B.F):
    """Useful FLOPs of a step with frozen weights: the forward, the linears' input gradients (as many as their
    forward) and attention's backward (four T x T products); LoRA and the recomputation not counted
    (the same count as zlora bench dit-block --backward)."""
    lin = 2 * T * (4 * D * D + 3 * D * F)
    return 2 * lin + 12 * T * T * D


def bench(a):
    T = a.tokens
    dt = torch.float32 if a.dtype == "f32" else torch.bfloat16
    act = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    g = torch.Generator().manual_seed(0)
    W, N, x0, c = B.random_block(T, dt, g)
    if a.dtype == "autocast":
        N = {k: v.float() for k, v in N.items()}
        x0, c = x0.float(), c.float()
    L = {}
    for n in LORA:
        o, i = W[n].shape
        dn = ((torch.rand(a.rank, i, generator=g) * 2 - 1) / math.sqrt(i)).requires_grad_()
        up = ((torch.rand(o, a.rank, generator=g) * 2 - 1) * 0.1 / math.sqrt(a.rank)).requires_grad_()
        L[n] = (dn, up)
    cos, sin = B.rope_tables(T, act)
    gout = torch.randn(T, B.D, generator=g).to(act)
    lin = lora_lin(W, L)

    def f(x):
        return B.block(x, W, N, c, cos, sin, lin)

    tf, tb = [], []
    for it in range(a.iters + 1):
        for dn, up in L.values():
            dn.grad = up.grad = None
        x = x0.clone().requires_grad_()
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.dtype == "autocast"):
            if a.checkpoint:
                out = torch.utils.checkpoint.checkpoint(f, x, use_reentrant=False)
            else:
                out = f(x)
            loss = (out * gout).sum()
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        tf.append(t1 - t0)
        tb.append(t2 - t1)
        del out, loss, x
    med = lambda v: sorted(v)[len(v) // 2]  # noqa: E731
    steps = [f + b for f, b in zip(tf[1:], tb[1:])]
    s = med(steps)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(dict(bench="dit-block-train-torch", tokens=T, dtype=a.dtype, checkpoint=a.checkpoint, rank=a.rank,
                          seconds=round(s, 4), forward_s=round(med(tf[1:]), 4), backward_s=round(med(tb[1:]), 4),
                          gflops=round(step_flops(T) / s * 1e-9, 1), peak_rss_mb=round(rss),
                          threads=torch.get_num_threads(), torch=torch.__version__)))


def rel(a, b):
    a, b = a.double().flatten(), b.double().flatten()
    return float((a - b).norm() / max(b.norm(), 1e-300))


def check(a):
    import st
    import zimage_ref as zr
    zr._import_torch()
    Z, meta = st.read(a.check)
    t = lambda v, dt=torch.float64: torch.from_numpy(v.copy()).to(dt)  # noqa: E731
    heads, hd, eps = int(meta["n_heads"]), int(meta["head_dim"]), float(meta["norm_eps"])
    cs = t(Z["cs"])
    cos, sin = cs[..., 0], cs[..., 1]
    names = [n for n in LORA if ZNAME[n] + ".lora_down" in Z]
    out = {}

    # the float64 reference: zimage_ref.block, LoRA merged into the weights
    Wr, leaves = {}, {}
    for n, zn in ZNAME.items():
        Wr["b." + zn + ".weight"] = t(Z[zn + ".weight"])
        if zn + ".bias" in Z:
            Wr["b." + zn + ".bias"] = t(Z[zn + ".bias"])
    for n in names:
        dn = t(Z[ZNAME[n] + ".lora_down"]).requires_grad_()
        up = t(Z[ZNAME[n] + ".lora_up"]).requires_grad_()
        leaves[n] = (dn, up)
        Wr["b." + ZNAME[n] + ".weight"] = Wr["b." + ZNAME[n] + ".weight"] + up @ dn
    for n, zn in NNAME.items():
        Wr["b." + zn + ".weight"] = t(Z[zn + ".weight"])
    x = t(Z["x"]).requires_grad_()
    cond = t(Z["cond"]).requires_grad_()
    y = zr.block(Wr, "b", x, cos, sin, dict(n_heads=heads, head_dim=hd, norm_eps=eps), cond)
    (y * t(Z["g"])).sum().backward()
    ref = dict(y=y.detach(), dx=x.grad, dcond=cond.grad)
    for n in names:
        ref["grad." + ZNAME[n] + ".lora_down"] = leaves[n][0].grad
        ref["grad." + ZNAME[n] + ".lora_up"] = leaves[n][1].grad

    def errs(got):
        e = {k: rel(got[k], ref[k]) for k in ref}
        lg = [v for k, v in e.items() if k.startswith("grad.")]
        return dict(y=e["y"], dx=e["dx"], dcond=e["dcond"], lora_max=max(lg), lora_median=sorted(lg)[len(lg) // 2],
                    worst=max((v, k) for k, v in e.items() if k.startswith("grad."))[1])

    got = {k: torch.from_numpy(Z[k].copy()) for k in ref}
    rows = [dict(impl="zlora", gemm=meta.get("gemm", "?"), **errs(got))]

    # this script's block (the timed one) on the same weights, float32 and bf16
    for dtn, dt in (("f32", torch.float32), ("bf16", torch.bfloat16)):
        W = {n: t(Z[zn + ".weight"], dt) for n, zn in ZNAME.items()}
        W["ada_b"] = t(Z[ZNAME["ada"] + ".bias"], dt)
        N = {n: t(Z[zn + ".weight"], dt) for n, zn in NNAME.items()}
        L = {n: (t(Z[ZNAME[n] + ".lora_down"], torch.float32).requires_grad_(),
                 t(Z[ZNAME[n] + ".lora_up"], torch.float32).requires_grad_()) for n in names}
        xx = t(Z["x"], dt).requires_grad_()
        cc = t(Z["cond"], dt).requires_grad_()
        yy = B.block(xx, W, N, cc, cos.to(dt), sin.to(dt), lora_lin(W, L), heads, hd)
        (yy * t(Z["g"], dt)).sum().backward()
        mine = dict(y=yy.detach(), dx=xx.grad, dcond=cc.grad)
        for n in names:
            mine["grad." + ZNAME[n] + ".lora_down"] = L[n][0].grad
            mine["grad." + ZNAME[n] + ".lora_up"] = L[n][1].grad
        rows.append(dict(impl="torch-" + dtn, gemm=dtn, **errs(mine)))
    for r in rows:
        print(json.dumps({k: (float("%.3g" % v) if isinstance(v, float) else v) for k, v in r.items()}))


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--tokens", type=int, default=1024)
    p.add_argument("--dtype", choices=["f32", "bf16", "autocast"], default="bf16")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--checkpoint", action="store_true")
    p.add_argument("--check")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.check:
        check(a)
    else:
        bench(a)
