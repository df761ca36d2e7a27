#!/usr/bin/env python3
"""qwen3_ref.py — an independent float32 PyTorch reference of the Qwen3 text encoder as Z-Image uses it
(hidden_states[-2]: the residual stream after decoder layer L-2 of L, without the final norm), written
from ../shared/spec/zimage.md §4, plus the golden files the C tests compare against.

Usage:
  /usr/bin/python3 tests/ref/qwen3_ref.py --out tests/data/qwen3                 # regenerate everything
  /usr/bin/python3 tests/ref/qwen3_ref.py --out tests/data/qwen3 --weights-only
        # numpy only (no torch): rewrite just the weight files (they are git-ignored) and check them
        # against the committed weights.sha256; well under a second.

Everything is deterministic: random values come from the counter-based splitmix64 generator of
zimage_ref.py (keyed by a string; no numpy/torch RNG), so the weight files are byte-identical on every
machine. See tests/data/qwen3/README.md for the file list.

Model (HF Qwen3Model, batch 1, no padding, positions 0..n-1):
  x = embed_tokens[ids]
  per layer: h = x + o_proj(attn(rmsnorm(x, input_layernorm)))
             x = h + down_proj(silu(gate_proj(n)) * up_proj(n)),  n = rmsnorm(h, post_attention_layernorm)
  attn: q/k/v projections (no bias) -> per-head rmsnorm q_norm / k_norm -> RoPE, half-split
        (rotate_half), inv_freq = theta^(-2i/head_dim) computed in float32 as HF does -> causal softmax
        attention with scale 1/sqrt(head_dim), kv head = q head // (heads / kv_heads)
  hidden_states = [emb, out_0, ..., out_{L-2}, norm(out_{L-1})];  the encoder output is hidden_states[-2].
"""
import argparse
import json
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402

# ----------------------------------------------------------------------------------------------------
# deterministic random numbers: tests/ref/keyrng.py
from keyrng import _fnv1a, _u64, randn, uniform  # noqa: E402,F401


# ----------------------------------------------------------------------------------------------------
# configurations

CONFIGS = {
    # (a): GQA 4/2, head_dim 16; non-default rope_theta and eps, so config.json must be read
    "tiny_a": dict(hidden=64, layers=4, heads=4, kv_heads=2, head_dim=16, ffn=96, vocab=1000,
                   rope_theta=10000.0, eps=1e-5),
    # (b): one kv head, head_dim 32, q width 128 != hidden 96; Qwen3's default theta and eps
    "tiny_b": dict(hidden=96, layers=3, heads=4, kv_heads=1, head_dim=32, ffn=160, vocab=1000,
                   rope_theta=1000000.0, eps=1e-6),
}
# what a loader without config.json must assume (Qwen3's values)
DEFAULT_THETA, DEFAULT_EPS = 1000000.0, 1e-6

CASES = {"case0": 8, "case1": 13, "case2": 37}

SHARDS = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]


def full_cfg(name):
    c = dict(CONFIGS[name])
    c["name"] = name
    return c


def hf_config(c):
    return {
        "architectures": ["Qwen3ForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 151643,
        "eos_token_id": 151645,
        "head_dim": c["head_dim"],
        "hidden_act": "silu",
        "hidden_size": c["hidden"],
        "initializer_range": 0.02,
        "intermediate_size": c["ffn"],
        "max_position_embeddings": 40960,
        "max_window_layers": c["layers"],
        "model_type": "qwen3",
        "num_attention_heads": c["heads"],
        "num_hidden_layers": c["layers"],
        "num_key_value_heads": c["kv_heads"],
        "rms_norm_eps": c["eps"],
        "rope_scaling": None,
        "rope_theta": c["rope_theta"],
        "sliding_window": None,
        "tie_word_embeddings": c["name"] == "tiny_b",
        "torch_dtype": "float32",
        "transformers_version": "4.51.0",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": c["vocab"],
    }


# ----------------------------------------------------------------------------------------------------
# weights (HF names without the "model." prefix)


def gen_weights(c):
    d, f, hd = c["hidden"], c["ffn"], c["head_dim"]
    qd, kvd = c["heads"] * hd, c["kv_heads"] * hd
    seed = "qwen3/" + c["name"] + "/"
    W = {}

    def lin(name, out, inn, gain=1.0):
        W[name + ".weight"] = randn(seed + name + ".weight", (out, inn), gain / math.sqrt(inn))

    def norm(name, n):
        W[name] = randn(seed + name, (n,), 0.1, 1.0)

    W["embed_tokens.weight"] = randn(seed + "embed_tokens.weight", (c["vocab"], d))
    for i in range(c["layers"]):
        p = "layers.%d." % i
        norm(p + "input_layernorm.weight", d)
        norm(p + "post_attention_layernorm.weight", d)
        lin(p + "self_attn.q_proj", qd, d)
        lin(p + "self_attn.k_proj", kvd, d)
        lin(p + "self_attn.v_proj", kvd, d)
        lin(p + "self_attn.o_proj", d, qd)
        norm(p + "self_attn.q_norm.weight", hd)
        norm(p + "self_attn.k_norm.weight", hd)
        lin(p + "mlp.gate_proj", f, d)
        lin(p + "mlp.up_proj", f, d)
        lin(p + "mlp.down_proj", d, f)
    norm("norm.weight", d)
    return W


def weight_files(cname):
    """Relative paths (under the config dir) of the generated, git-ignored weight files."""
    f = ["text_encoder/" + s for s in SHARDS]
    if cname == "tiny_a":
        f.append("qwen_3_4b.safetensors")
    else:
        f += ["model_bare.safetensors", "comfy_bf16.safetensors"]
    return f


def write_layouts(c, W, cdir):
    tdir = os.path.join(cdir, "text_encoder")
    os.makedirs(tdir, exist_ok=True)
    with open(os.path.join(tdir, "config.json"), "w") as fh:
        json.dump(hf_config(c), fh, indent=2, sort_keys=True)
        fh.write("\n")
    hf = {"model." + k: v for k, v in W.items()}
    if c["name"] == "tiny_a":  # an untied LM head (never used by the encoder)
        hf["lm_head.weight"] = randn("qwen3/tiny_a/lm_head.weight", (c["vocab"], c["hidden"]), 0.125)
    names = sorted(hf)
    total = sum(hf[n].size * 4 for n in names)
    # split in sorted-name order at half the bytes (a layer's tensors end up in both shards)
    acc, first = 0, []
    for n in names:
        if acc >= total // 2:
            break
        first.append(n)
        acc += hf[n].size * 4
    fs = set(first)
    second = [n for n in names if n not in fs]
    meta = {"format": "pt"}
    st.write(os.path.join(tdir, SHARDS[0]), {n: (hf[n], "F32") for n in first}, meta)
    st.write(os.path.join(tdir, SHARDS[1]), {n: (hf[n], "F32") for n in second}, meta)
    index = {"metadata": {"total_size": total},
             "weight_map": dict([(n, SHARDS[0]) for n in first] + [(n, SHARDS[1]) for n in second])}
    with open(os.path.join(tdir, "model.safetensors.index.json"), "w") as fh:
        json.dump(index, fh, indent=2, sort_keys=True)
        fh.write("\n")
    if c["name"] == "tiny_a":
        pre = "text_encoders.qwen3_4b.transformer.model."
        st.write(os.path.join(cdir, "qwen_3_4b.safetensors"), {pre + k: (v, "F32") for k, v in W.items()})
    else:
        st.write(os.path.join(cdir, "model_bare.safetensors"), {k: (v, "F32") for k, v in W.items()})
        st.write(os.path.join(cdir, "comfy_bf16.safetensors"), {"transformer.model." + k: (v, "BF16") for k, v in W.items()},
                 {"format": "pt", "note": "zlora tiny Qwen3 test encoder (bf16)"})


def gen_ids(c, case):
    n = CASES[case]
    ids = np.floor(uniform("qwen3/ids/" + case, (n,)) * c["vocab"]).astype(np.int32)
    if case == "case0":
        ids[0], ids[1] = 0, c["vocab"] - 1   # the first and the last row of the table
    if case == "case2":
        ids[20] = ids[3]                      # a repeated token at another position
    return ids


# ----------------------------------------------------------------------------------------------------
# the PyTorch reference (float32)

torch = None


def _import_torch():
    global torch
    if torch is None:
        import torch as _t
        torch = _t
        torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))


def T(a):
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def rmsnorm(x, w, eps):
    """HF's Qwen3RMSNorm: computed in float32, the result cast back to x's dtype before the weight."""
    xf = x.float()
    var = xf.pow(2).mean(-1, keepdim=True)
    return w * (xf * torch.rsqrt(var + eps)).to(x.dtype)


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def rope_cos_sin(n, hd, theta):
    """HF's default rotary embedding: inv_freq in float32, angles in float32."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
    pos = torch.arange(n, dtype=torch.int64).float()
    freqs = pos[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def forward_all(W, c, ids, theta=None, eps=None, layers=None):
    """All hidden states [emb, out_0, ..., out_{L-2}, norm(out_{L-1})] (HF's tuple), as torch tensors.

    W: numpy arrays (used as float32) or torch tensors (used as they are: float32, or bfloat16 to compute
    as HF does in bf16: norms and softmax in float32, everything else in bf16).
    layers: run only the first `layers` decoder layers and return [emb, out_0, ..., out_{layers-1}]
    without the final norm (the last entry is hidden_states[-2] for layers = L-1; layer L-1 and
    norm.weight need not be in W then)."""
    theta = c["rope_theta"] if theta is None else theta
    eps = c["eps"] if eps is None else eps
    H, KV, hd = c["heads"], c["kv_heads"], c["head_dim"]
    n = len(ids)
    w = {k: v if torch.is_tensor(v) else T(v) for k, v in W.items()}
    x = w["embed_tokens.weight"][torch.from_numpy(np.asarray(ids, dtype=np.int64))]
    dt = x.dtype
    cos, sin = (t.to(dt) for t in rope_cos_sin(n, hd, theta))
    mask = torch.full((n, n), float("-inf")).triu(1).to(dt)
    hs = [x]
    for i in range(c["layers"] if layers is None else layers):
        p = "layers.%d." % i
        a = rmsnorm(x, w[p + "input_layernorm.weight"], eps)
        q = (a @ w[p + "self_attn.q_proj.weight"].T).view(n, H, hd).transpose(0, 1)     # [H, n, hd]
        k = (a @ w[p + "self_attn.k_proj.weight"].T).view(n, KV, hd).transpose(0, 1)
        v = (a @ w[p + "self_attn.v_proj.weight"].T).view(n, KV, hd).transpose(0, 1)
        q = rmsnorm(q, w[p + "self_attn.q_norm.weight"], eps)
        k = rmsnorm(k, w[p + "self_attn.k_norm.weight"], eps)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(H // KV, dim=0)     # repeat_kv: q head h uses kv head h // (H/KV)
        v = v.repeat_interleave(H // KV, dim=0)
        s = (q @ k.transpose(1, 2)) / math.sqrt(hd) + mask
        o = (torch.softmax(s, dim=-1, dtype=torch.float32).to(dt) @ v).transpose(0, 1).reshape(n, H * hd)
        h = x + o @ w[p + "self_attn.o_proj.weight"].T
        m = rmsnorm(h, w[p + "post_attention_layernorm.weight"], eps)
        x = h + (torch.nn.functional.silu(m @ w[p + "mlp.gate_proj.weight"].T) * (m @ w[p + "mlp.up_proj.weight"].T)) \
            @ w[p + "mlp.down_proj.weight"].T
        hs.append(x)
    if layers is None:
        hs[-1] = rmsnorm(x, w["norm.weight"], eps)
    return hs


def forward(W, c, ids, **kw):
    hs = forward_all(W, c, ids, **kw)
    assert len(hs) == c["layers"] + 1
    return hs[-2].numpy().astype(np.float32)


def forward_np64(W, c, ids):
    """A second implementation: float64 numpy, explicit loops over heads and the spec's index formulas."""
    H, KV, hd, eps = c["heads"], c["kv_heads"], c["head_dim"], c["eps"]
    W = {k: v.astype(np.float64) for k, v in W.items()}
    n, half = len(ids), c["head_dim"] // 2
    x = np.stack([W["embed_tokens.weight"][i] for i in ids])

    def rms(v, w):
        return v / np.sqrt(np.mean(v * v, axis=-1, keepdims=True) + eps) * w

    ang = np.array([[t * c["rope_theta"] ** (-2.0 * j / hd) for j in range(half)] for t in range(n)])

    def rope(v):          # v [n, hd]; pairs (j, j + hd/2)
        out = v.copy()
        cs, sn = np.cos(ang), np.sin(ang)
        out[:, :half] = v[:, :half] * cs - v[:, half:] * sn
        out[:, half:] = v[:, half:] * cs + v[:, :half] * sn
        return out

    for i in range(c["layers"] - 1):     # hidden_states[-2]: layers 0..L-2 only
        p = "layers.%d." % i
        a = rms(x, W[p + "input_layernorm.weight"])
        q, k, v = a @ W[p + "self_attn.q_proj.weight"].T, a @ W[p + "self_attn.k_proj.weight"].T, a @ W[p + "self_attn.v_proj.weight"].T
        o = np.zeros((n, H * hd))
        for h in range(H):
            g = h // (H // KV)
            qh = rope(rms(q[:, h * hd:(h + 1) * hd], W[p + "self_attn.q_norm.weight"]))
            kh = rope(rms(k[:, g * hd:(g + 1) * hd], W[p + "self_attn.k_norm.weight"]))
            vh = v[:, g * hd:(g + 1) * hd]
            for t in range(n):
                s = qh[t] @ kh[:t + 1].T / math.sqrt(hd)
                e = np.exp(s - s.max())
                o[t, h * hd:(h + 1) * hd] = (e / e.sum()) @ vh[:t + 1]
        x = x + o @ W[p + "self_attn.o_proj.weight"].T
        m = rms(x, W[p + "post_attention_layernorm.weight"])
        gt = m @ W[p + "mlp.gate_proj.weight"].T
        x = x + (gt / (1.0 + np.exp(-gt)) * (m @ W[p + "mlp.up_proj.weight"].T)) @ W[p + "mlp.down_proj.weight"].T
    return x


def forward_transformers(W, c, ids):
    """HF transformers' Qwen3Model, when it can be imported (None otherwise)."""
    try:
        from transformers import Qwen3Config, Qwen3Model
    except Exception:
        return None
    cfg = Qwen3Config(vocab_size=c["vocab"], hidden_size=c["hidden"], intermediate_size=c["ffn"],
                      num_hidden_layers=c["layers"], num_attention_heads=c["heads"],
                      num_key_value_heads=c["kv_heads"], head_dim=c["head_dim"], rms_norm_eps=c["eps"],
                      rope_theta=c["rope_theta"], attention_bias=False, tie_word_embeddings=False)
    cfg._attn_implementation = "eager"
    m = Qwen3Model(cfg).float().eval()
    m.load_state_dict({k: T(v) for k, v in W.items()}, strict=True)
    with torch.no_grad():
        out = m(input_ids=torch.from_numpy(np.asarray(ids, dtype=np.int64))[None], output_hidden_states=True)
    return out.hidden_states[-2][0].numpy()


def rel(a, b):
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / max(np.linalg.norm(b), 1e-30))


# ----------------------------------------------------------------------------------------------------


def strip(sd, prefix):
    assert all(k.startswith(prefix) for k in sd), prefix
    return {k[len(prefix):]: v for k, v in sd.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "qwen3"))
    ap.add_argument("--weights-only", action="store_true",
                    help="numpy only: regenerate the git-ignored weight files and verify weights.sha256")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    out = args.out
    os.makedirs(out, exist_ok=True)

    cfgs = {n: full_cfg(n) for n in CONFIGS}
    weights = {}
    for n, c in cfgs.items():
        weights[n] = gen_weights(c)
        write_layouts(c, weights[n], os.path.join(out, n))
    lines = st.manifest_lines(out, CONFIGS, weight_files)
    if st.sync_manifest(out, lines, args.weights_only, "qwen3 weights"):
        return

    _import_torch()
    log = print if args.verbose else (lambda *a: None)
    # our half-split RoPE equals the complex-number form on pairs (j, j + hd/2)
    cos, sin = rope_cos_sin(5, 16, 10000.0)
    v = T(randn("chk/rope", (5, 16)))
    z = torch.complex(v[:, :8].double(), v[:, 8:].double()) * torch.polar(torch.ones(5, 8, dtype=torch.float64), torch.atan2(sin[:, :8], cos[:, :8]).double())
    assert torch.allclose(v * cos + rotate_half(v) * sin, torch.cat([z.real, z.imag], 1).float(), atol=1e-5)

    for n, c in cfgs.items():
        cdir = os.path.join(out, n)
        W = weights[n]
        # every layout read back gives exactly the generated weights
        tdir = os.path.join(cdir, "text_encoder")
        sh = {}
        for s in SHARDS:
            sh.update(st.read(os.path.join(tdir, s))[0])
        with open(os.path.join(tdir, "model.safetensors.index.json")) as fh:
            idx = json.load(fh)
        assert sorted(idx["weight_map"]) == sorted(sh)
        assert len(set(idx["weight_map"].values())) == 2
        sh.pop("lm_head.weight", None)
        singles = {"qwen_3_4b.safetensors": ("text_encoders.qwen3_4b.transformer.model.", W)} if n == "tiny_a" else \
            {"model_bare.safetensors": ("", W),
             "comfy_bf16.safetensors": ("transformer.model.", {k: st.round_bf16(v) for k, v in W.items()})}
        for k in W:
            assert np.array_equal(strip(sh, "model.")[k], W[k]), k
        for f, (pre, want) in singles.items():
            got = strip(st.read(os.path.join(cdir, f))[0], pre)
            assert sorted(got) == sorted(want) and all(np.array_equal(got[k], want[k]) for k in want), f
        if n == "tiny_b":
            assert set(st.dtypes(os.path.join(cdir, "comfy_bf16.safetensors")).values()) == {"BF16"}

        for case in CASES:
            ids = gen_ids(c, case)
            st.write(os.path.join(cdir, "in_%s.safetensors" % case), {"ids": ids})
            o = forward(W, c, ids)
            assert o.shape == (len(ids), c["hidden"]) and np.all(np.isfinite(o))
            st.write(os.path.join(cdir, "out_%s.safetensors" % case), {"out": o})
            r64 = rel(o, forward_np64(W, c, ids))
            assert r64 < 2e-6, r64
            hf = forward_transformers(W, c, ids)
            if hf is not None:
                assert rel(o, hf) < 1e-5, rel(o, hf)
            # causal: a prefix gives the first rows
            k = len(ids) // 2 + 1
            rp = float(np.max(np.abs(forward(W, c, ids[:k]) - o[:k])))
            assert rp < 1e-5 * max(1.0, float(np.max(np.abs(o)))), rp
            # a changed token moves only its row and the later ones
            ids2 = ids.copy()
            ids2[k] = (ids2[k] + 1) % c["vocab"]
            o2 = forward(W, c, ids2)
            assert np.array_equal(o2[:k], o[:k]) and rel(o2[k:], o[k:]) > 1e-2
            # the last layer and the final norm do not matter; the second to last does
            Wx = dict(W)
            last = "layers.%d." % (c["layers"] - 1)
            for kk in W:
                if kk.startswith(last) or kk == "norm.weight":
                    Wx[kk] = W[kk] * 1.5 + 0.1
            assert np.array_equal(forward(Wx, c, ids), o)
            Wy = dict(W)
            pen = "layers.%d.mlp.down_proj.weight" % (c["layers"] - 2)
            Wy[pen] = W[pen] * 1.5
            r_pen = rel(forward(Wy, c, ids), o)
            assert r_pen > 1e-2, r_pen
            # RoPE matters (theta), and GQA grouping matters (kv heads swapped)
            r_theta = rel(forward(W, c, ids, theta=c["rope_theta"] * 4), o)
            assert r_theta > 1e-3, r_theta
            log("%s %s: std %.3f  vs f64 loops %.1e  prefix max|diff| %.1e  change: penultimate layer %.3f  theta %.3f"
                % (n, case, np.std(o), r64, rp, r_pen, r_theta))
            if n == "tiny_a":
                # qwen_3_4b.safetensors has no config.json: a loader falls back to Qwen3's theta and eps
                od = forward(W, c, ids, theta=DEFAULT_THETA, eps=DEFAULT_EPS)
                st.write(os.path.join(cdir, "out_default_%s.safetensors" % case), {"out": od})
                log("%s %s: default theta/eps rel change %.3f" % (n, case, rel(od, o)))
                assert rel(od, o) > 1e-3
                if c["kv_heads"] > 1:
                    Wg = dict(W)
                    hd = c["head_dim"]
                    for i in range(c["layers"]):
                        for pj in ("k_proj", "v_proj"):
                            kk = "layers.%d.self_attn.%s.weight" % (i, pj)
                            Wg[kk] = np.concatenate([W[kk][hd:2 * hd], W[kk][:hd], W[kk][2 * hd:]])
                    assert rel(forward(Wg, c, ids), o) > 1e-2
            else:
                Wb = {k: st.round_bf16(v) for k, v in W.items()}
                ob = forward(Wb, c, ids)
                st.write(os.path.join(cdir, "out_bf16_%s.safetensors" % case), {"out": ob})
                log("%s %s: bf16 weights rel diff %.2e" % (n, case, rel(ob, o)))
                assert 1e-4 < rel(ob, o) < 5e-2
    print("qwen3_ref: wrote %s (self-checks passed%s)" % (out, "" if forward_transformers(weights["tiny_b"], cfgs["tiny_b"], [1, 2]) is not None
                                                       else "; transformers not importable, its cross-check skipped"))


if __name__ == "__main__":
    main()
