#!/usr/bin/env python3
"""zimage_grad_ref.py — the PyTorch autograd reference for zlora's training backward
(zl_zimage_forward_backward): the flow-matching loss of one sample and its gradients with respect to LoRA
factors (and a few norm weights), on the tiny Z-Image configs of zimage_ref.py, whose model code this
script imports (forward_t, the weights, the inputs); nothing of the model is written twice.

Usage (after `make zimage-weights`, whose weight files this script reads and checks against
tests/data/zimage/weights.sha256):
  /usr/bin/python3 tests/ref/zimage_grad_ref.py --out tests/data/zimage

Writes, per config (tests/data/zimage/<cfg>/grad/):
  lora_train.safetensors  the trainable LoRA: rank 4, alpha 8 (scale 2), random nonzero lora_A (down) and
                          lora_B (up), names diffusion_model.<module>.lora_A/B.weight + .alpha, BF16
  golden.safetensors      x [16,H,W], t [1], cap [L,cap_feat_dim], target [16,H,W] (the inputs); out (the
                          model output with the LoRA at STRENGTH, runtime-equivalent: W + s·B@A); loss [1] =
                          mean((out - target)^2); grad.<module>.lora_A / .lora_B (d loss / d stored factor,
                          the scale s = STRENGTH·alpha/rank included) and grad.<block>.<norm>.weight
  golden_bf16.safetensors (tiny_a) the same on the bf16-rounded base weights (comfy_prefixed_bf16), for a
                          subset of the gradients
Self-checks: the float32 autograd gradients agree with a float64 run to < 1e-4 relative L2 (~1e-6 in
practice), every gradient is nonzero, and the LoRA changes the output.
"""
import argparse
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402
import zimage_ref as zr  # noqa: E402
from keyrng import randn  # noqa: E402

RANK, ALPHA, STRENGTH = 4, 8.0, 0.75

BLOCK_LINEARS = ["attention.to_q", "attention.to_k", "attention.to_v", "attention.to_out.0",
                 "feed_forward.w1", "feed_forward.w2", "feed_forward.w3", "adaLN_modulation.0"]
NORMS = ["attention.norm_q", "attention.norm_k", "attention_norm1", "attention_norm2", "ffn_norm1", "ffn_norm2"]
TOP = ["all_x_embedder.2-1", "t_embedder.mlp.0", "t_embedder.mlp.2", "cap_embedder.1",
       "all_final_layer.2-1.adaLN_modulation.1", "all_final_layer.2-1.linear"]

# What is trained. tiny_a: every kind of linear in every kind of block plus all six top-level linears
# (so the gradient flows through everything: t-embedder, both refiners, caption and image embedders),
# and every norm weight of every block. tiny_b: a sparse set, so blocks below the lowest trainable one
# are skipped (noise_refiner.0) and only some kinds appear.
GRAD_SETS = {
    "tiny_a": dict(
        case="case0",
        modules=TOP + ["layers.0." + m for m in BLOCK_LINEARS] +
        ["layers.1." + m for m in ("attention.to_q", "attention.to_out.0", "feed_forward.w2")] +
        ["noise_refiner.0." + m for m in ("attention.to_k", "feed_forward.w3", "adaLN_modulation.0")] +
        ["context_refiner.0." + m for m in ("attention.to_v", "feed_forward.w1")],
        norms=[b + "." + n for b in ("layers.0", "layers.1", "noise_refiner.0", "context_refiner.0") for n in NORMS],
        bf16_subset=["layers.0.attention.to_q", "layers.0.feed_forward.w2", "layers.0.adaLN_modulation.0",
                     "all_final_layer.2-1.linear", "t_embedder.mlp.0"]),
    "tiny_b": dict(
        case="case1",
        modules=["layers.2.attention.to_q", "layers.0.feed_forward.w2", "noise_refiner.1.adaLN_modulation.0",
                 "context_refiner.0.attention.to_k", "all_final_layer.2-1.linear"],
        norms=["layers.1.attention.norm_k", "context_refiner.1.ffn_norm2"],
        bf16_subset=None),
}


def load_weights(out, cname, rel):
    """The weight file the C test loads, checked against weights.sha256 (so the golden provably comes from
    the manifest's weights), as {diffusers name: float32 array}."""
    path = os.path.join(out, cname, rel)
    want = None
    with open(os.path.join(out, "weights.sha256")) as fh:
        for line in fh:
            h, p = line.split()
            if p == cname + "/" + rel:
                want = h
    if want is None or not os.path.exists(path) or st.sha256(path) != want:
        sys.exit("%s missing or not the weights of weights.sha256: run `make zimage-weights` first" % path)
    W = st.read(path)[0]
    return zr.from_comfy(W) if "comfy" in rel else W


def gen_lora(c, W, modules):
    """{module: (A [r,in], B [out,r])} bf16-rounded, ΔW = s·B@A with rms ~0.3x the weight's std."""
    s = STRENGTH * ALPHA / RANK
    f = {}
    for m in modules:
        o, n = W[m + ".weight"].shape
        target = 0.3 * float(np.std(W[m + ".weight"]))
        a = math.sqrt(target / (s * math.sqrt(RANK)))
        A = st.round_bf16(randn("grad/lora/%s/%s/A" % (c["name"], m), (RANK, n), a))
        B = st.round_bf16(randn("grad/lora/%s/%s/B" % (c["name"], m), (o, RANK), a))
        f[m] = (A, B)
    return f


def lora_file(lora):
    t = {}
    for m, (A, B) in lora.items():
        k = "diffusion_model." + m
        t[k + ".lora_A.weight"] = (A, "BF16")
        t[k + ".lora_B.weight"] = (B, "BF16")
        t[k + ".alpha"] = (np.array(ALPHA, dtype=np.float32), "BF16")
    return t


def run(W, c, x, t, cap, target, lora, norms, dtype):
    """Forward + autograd in `dtype`: (out, loss, {grad name: array})."""
    torch = zr.torch
    Wt = {k: torch.from_numpy(np.ascontiguousarray(v)).to(dtype) for k, v in W.items()}
    s = STRENGTH * ALPHA / RANK
    leaves = {}
    for m, (A, B) in lora.items():
        a = torch.from_numpy(A.copy()).to(dtype).requires_grad_(True)
        b = torch.from_numpy(B.copy()).to(dtype).requires_grad_(True)
        leaves["grad." + m + ".lora_A"], leaves["grad." + m + ".lora_B"] = a, b
        Wt[m + ".weight"] = Wt[m + ".weight"] + s * (b @ a)     # = a runtime branch y += s·(x·Aᵀ)·Bᵀ
    for nm in norms:
        w = Wt[nm + ".weight"].clone().requires_grad_(True)
        leaves["grad." + nm + ".weight"] = w
        Wt[nm + ".weight"] = w
    X = torch.from_numpy(x).to(dtype)
    Cp = torch.from_numpy(cap).to(dtype)
    out = zr.forward_t(Wt, c, X, float(t[0]), Cp)
    loss = ((out - torch.from_numpy(target).to(dtype)) ** 2).mean()
    loss.backward()
    grads = {k: v.grad.detach().double().numpy() for k, v in leaves.items()}
    return out.detach().double().numpy(), float(loss), grads


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "zimage"))
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    zr._import_torch()
    torch = zr.torch
    for cname, gs in GRAD_SETS.items():
        c = zr.full_cfg(cname)
        W = load_weights(args.out, cname, "diffusers_single.safetensors")
        Wg = zr.gen_weights(c)
        assert sorted(W) == sorted(Wg) and all(np.array_equal(W[k], Wg[k]) for k in W)
        x, t, cap = zr.gen_inputs(c, gs["case"])
        target = randn("grad/target/%s/%s" % (cname, gs["case"]), x.shape)
        lora = gen_lora(c, W, gs["modules"])
        gdir = os.path.join(args.out, cname, "grad")
        os.makedirs(gdir, exist_ok=True)
        st.write(os.path.join(gdir, "lora_train.safetensors"), lora_file(lora),
                 {"format": "pt", "note": "zlora gradient test LoRA (tests/ref/zimage_grad_ref.py)"})
        back = st.read(os.path.join(gdir, "lora_train.safetensors"))[0]
        for m, (A, B) in lora.items():  # stored exactly (the values are bf16 already)
            assert np.array_equal(back["diffusion_model." + m + ".lora_A.weight"], A)
            assert np.array_equal(back["diffusion_model." + m + ".lora_B.weight"], B)

        out, loss, grads = run(W, c, x, t, cap, target, lora, gs["norms"], torch.float32)
        out64, loss64, grads64 = run(W, c, x, t, cap, target, lora, gs["norms"], torch.float64)
        o0 = zr.forward(W, c, x, float(t[0]), cap)
        r_lora = zr.rel(out, o0)
        assert r_lora > 1e-2, r_lora                      # the LoRA matters
        assert zr.rel(out, out64) < 1e-4 and abs(loss - loss64) < 1e-4 * loss64, (zr.rel(out, out64), loss, loss64)
        worst = 0.0
        for k, g in grads.items():
            assert np.linalg.norm(g) > 0, k              # every gradient is nonzero
            r = zr.rel(g, grads64[k])
            worst = max(worst, r)
            assert r < 1e-4, (k, r)
        gold = {"x": x, "t": t, "cap": cap, "target": target, "out": out.astype(np.float32),
                "loss": np.array([loss], dtype=np.float32)}
        gold.update({k: v.astype(np.float32) for k, v in grads.items()})
        st.write(os.path.join(gdir, "golden.safetensors"), gold,
                 {"rank": str(RANK), "alpha": str(ALPHA), "strength": str(STRENGTH), "case": gs["case"]})
        print("%s %s: loss %.6f, %d gradients, f32 vs f64 worst rel %.1e, LoRA moves out by %.3f"
              % (cname, gs["case"], loss, len(grads), worst, r_lora))
        if args.verbose:
            for k in sorted(grads):
                print("  %-60s |g| %.4g  f32/f64 %.1e" % (k, np.linalg.norm(grads[k]), zr.rel(grads[k], grads64[k])))

        if gs["bf16_subset"]:
            Wb = load_weights(args.out, cname, "comfy_prefixed_bf16.safetensors")
            assert all(np.array_equal(Wb[k], st.round_bf16(W[k])) for k in W)
            sub = {m: lora[m] for m in gs["bf16_subset"]}
            outb, lossb, gradsb = run(Wb, c, x, t, cap, target, lora, [], torch.float32)
            goldb = {"out": outb.astype(np.float32), "loss": np.array([lossb], dtype=np.float32)}
            for m in sub:
                for p in ("lora_A", "lora_B"):
                    goldb["grad.%s.%s" % (m, p)] = gradsb["grad.%s.%s" % (m, p)].astype(np.float32)
            st.write(os.path.join(gdir, "golden_bf16.safetensors"), goldb,
                     {"rank": str(RANK), "alpha": str(ALPHA), "strength": str(STRENGTH), "case": gs["case"],
                      "weights": "comfy_prefixed_bf16.safetensors"})
            print("%s bf16 weights: loss %.6f (f32 weights %.6f), %d gradients" % (cname, lossb, loss, len(goldb) - 2))
    print("zimage_grad_ref: wrote %s/*/grad (self-checks passed)" % args.out)


if __name__ == "__main__":
    main()
