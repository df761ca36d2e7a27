#!/usr/bin/env python3
"""zimage_ref.py — an independent float32 PyTorch reference of the Z-Image (S3-DiT) transformer forward
pass, written from ../shared/spec/zimage.md §1-§3 and §10 and lora-formats.md §1-§2, plus the golden
files the C tests compare against.

Usage:
  /usr/bin/python3 tests/ref/zimage_ref.py --out tests/data/zimage             # regenerate everything
  /usr/bin/python3 tests/ref/zimage_ref.py --out tests/data/zimage --weights-only
        # numpy only (no torch): rewrite just the large weight files (they are git-ignored) and check
        # them against the committed weights.sha256; takes a few seconds.

Everything is deterministic: random values come from a counter-based splitmix64 generator keyed by a
string (no numpy/torch RNG, no transcendental functions), so the weight files are byte-identical on
every machine. See tests/data/zimage/README.md for the file list.

Model conventions (diffusers tensor names, batch 1, no attention mask):
  x [16,H,W] latent, t = model time (1 - sigma), cap [L, cap_feat_dim]; out [16,H,W] ~ x0 - noise
  (the model output, NOT negated).
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
# configurations

CONFIGS = {
    # (a): two heads of the real head_dim 128 with the real RoPE split [32,48,48]
    "tiny_a": dict(dim=256, n_heads=2, n_layers=2, n_refiner=1, axes_dims=[32, 48, 48],
                   axes_lens=[1536, 512, 512], cap_feat_dim=64),
    # (b): dim < 256 (adaLN width = min(dim,256) = 192), head_dim 64, more blocks
    "tiny_b": dict(dim=192, n_heads=3, n_layers=3, n_refiner=2, axes_dims=[16, 24, 24],
                   axes_lens=[128, 32, 32], cap_feat_dim=48),
}
COMMON = dict(rope_theta=256.0, norm_eps=1e-5, t_scale=1000.0, in_channels=16, patch=2, f_patch=1,
              t_mid=1024, freq_dim=256, max_period=10000.0, seq_multi_of=32)

# (H, W, L, t): image tokens (H/2)(W/2) = 15, 24, 64; caption L = 7, 40, 32
CASES = {
    "case0": (6, 10, 7, 0.3),     # 15 image tokens -> 32, caption 7 -> 32
    "case1": (12, 8, 40, 0.9),    # 24 image tokens -> 32, caption 40 -> 64
    "case2": (8, 32, 32, 0.0),    # 64 image tokens, caption 32: no padding at all; t = 0 (pure noise)
}

LORA_STRENGTH = {"aitk": 1.0, "kohya": 0.8, "comfy_qkv": 1.0, "lokr": 1.0, "loha": 1.0, "peft": 1.0}
STACK = [("aitk", 1.0), ("comfy_qkv", -0.5)]


def full_cfg(name):
    c = dict(COMMON)
    c.update(CONFIGS[name])
    c["name"] = name
    c["head_dim"] = sum(c["axes_dims"])
    assert c["head_dim"] * c["n_heads"] == c["dim"]
    c["ffn"] = int(c["dim"] / 3 * 8)
    c["adaln"] = min(c["dim"], 256)
    c["patch_dim"] = c["patch"] * c["patch"] * c["f_patch"] * c["in_channels"]
    return c


def diffusers_config(c):
    return {
        "_class_name": "ZImageTransformer2DModel",
        "_diffusers_version": "0.36.0.dev0",
        "all_f_patch_size": [c["f_patch"]],
        "all_patch_size": [c["patch"]],
        "axes_dims": list(c["axes_dims"]),
        "axes_lens": list(c["axes_lens"]),
        "cap_feat_dim": c["cap_feat_dim"],
        "dim": c["dim"],
        "in_channels": c["in_channels"],
        "n_heads": c["n_heads"],
        "n_kv_heads": c["n_heads"],
        "n_layers": c["n_layers"],
        "n_refiner_layers": c["n_refiner"],
        "norm_eps": c["norm_eps"],
        "qk_norm": True,
        "rope_theta": c["rope_theta"],
        "t_scale": c["t_scale"],
    }


# ----------------------------------------------------------------------------------------------------
# deterministic random numbers: tests/ref/keyrng.py
from keyrng import _fnv1a, _u64, randn, uniform  # noqa: E402,F401


# ----------------------------------------------------------------------------------------------------
# weights (diffusers names)


def block_names(c):
    return ([("layers.%d" % i, True) for i in range(c["n_layers"])] +
            [("noise_refiner.%d" % i, True) for i in range(c["n_refiner"])] +
            [("context_refiner.%d" % i, False) for i in range(c["n_refiner"])])


def gen_weights(c):
    d, f, a, hd, pd = c["dim"], c["ffn"], c["adaln"], c["head_dim"], c["patch_dim"]
    seed = "zimage/" + c["name"] + "/"
    W = {}

    def lin(name, out, inn, gain=1.0, bias=None):
        W[name + ".weight"] = randn(seed + name + ".weight", (out, inn), gain / math.sqrt(inn))
        if bias is not None:
            W[name + ".bias"] = randn(seed + name + ".bias", (out,), bias)

    def norm(name, n):
        W[name] = randn(seed + name, (n,), 0.1, 1.0)

    lin("all_x_embedder.2-1", d, pd, 1.0, 0.1)
    lin("t_embedder.mlp.0", c["t_mid"], c["freq_dim"], 1.5, 0.3)
    lin("t_embedder.mlp.2", a, c["t_mid"], 2.0, 0.1)
    norm("cap_embedder.0.weight", c["cap_feat_dim"])
    lin("cap_embedder.1", d, c["cap_feat_dim"], 1.0, 0.1)
    W["x_pad_token"] = randn(seed + "x_pad_token", (1, d))
    W["cap_pad_token"] = randn(seed + "cap_pad_token", (1, d))
    lin("all_final_layer.2-1.adaLN_modulation.1", d, a, 0.5, 0.1)
    lin("all_final_layer.2-1.linear", pd, d, 1.0, 0.1)
    for p, mod in block_names(c):
        for q in ("to_q", "to_k", "to_v"):
            lin(p + ".attention." + q, d, d)
        lin(p + ".attention.to_out.0", d, d)
        norm(p + ".attention.norm_q.weight", hd)
        norm(p + ".attention.norm_k.weight", hd)
        for n in ("attention_norm1", "attention_norm2", "ffn_norm1", "ffn_norm2"):
            norm(p + "." + n + ".weight", d)
        lin(p + ".feed_forward.w1", f, d)
        lin(p + ".feed_forward.w3", f, d)
        lin(p + ".feed_forward.w2", d, f)
        if mod:
            lin(p + ".adaLN_modulation.0", 4 * d, a, 0.7, None)
            # bias: scales around 0, gates around +0.6 so that every branch contributes
            b = randn(seed + p + ".adaLN_modulation.0.bias", (4 * d,), 0.2)
            b[d:2 * d] += 0.6
            b[3 * d:] += 0.6
            W[p + ".adaLN_modulation.0.bias"] = b
    return W


def expected_names(c):
    n = ["all_x_embedder.2-1.weight", "all_x_embedder.2-1.bias", "t_embedder.mlp.0.weight",
         "t_embedder.mlp.0.bias", "t_embedder.mlp.2.weight", "t_embedder.mlp.2.bias",
         "cap_embedder.0.weight", "cap_embedder.1.weight", "cap_embedder.1.bias", "x_pad_token",
         "cap_pad_token", "all_final_layer.2-1.adaLN_modulation.1.weight",
         "all_final_layer.2-1.adaLN_modulation.1.bias", "all_final_layer.2-1.linear.weight",
         "all_final_layer.2-1.linear.bias"]
    for p, mod in block_names(c):
        n += [p + s for s in (".attention.to_q.weight", ".attention.to_k.weight", ".attention.to_v.weight",
                              ".attention.to_out.0.weight", ".attention.norm_q.weight",
                              ".attention.norm_k.weight", ".attention_norm1.weight", ".attention_norm2.weight",
                              ".ffn_norm1.weight", ".ffn_norm2.weight", ".feed_forward.w1.weight",
                              ".feed_forward.w2.weight", ".feed_forward.w3.weight")]
        if mod:
            n += [p + ".adaLN_modulation.0.weight", p + ".adaLN_modulation.0.bias"]
    return sorted(n)


# ----------------------------------------------------------------------------------------------------
# diffusers <-> ComfyUI layouts (spec §3c)


def to_comfy(W, prefix=""):
    out = {}
    for k, v in W.items():
        if ".attention.to_k." in k or ".attention.to_v." in k:
            continue
        if ".attention.to_q." in k:
            b = k[:k.index(".attention.to_q.")]
            out[prefix + b + ".attention.qkv.weight"] = np.concatenate(
                [W[b + ".attention.to_q.weight"], W[b + ".attention.to_k.weight"],
                 W[b + ".attention.to_v.weight"]], axis=0)
            continue
        n = k
        n = n.replace("all_x_embedder.2-1.", "x_embedder.").replace("all_final_layer.2-1.", "final_layer.")
        n = n.replace(".attention.to_out.0.", ".attention.out.")
        n = n.replace(".attention.norm_q.", ".attention.q_norm.").replace(".attention.norm_k.", ".attention.k_norm.")
        out[prefix + n] = v
    return out


def from_comfy(Wc):
    """ComfyUI names (with or without the model.diffusion_model. prefix) -> diffusers names."""
    out = {}
    for k, v in Wc.items():
        if k.startswith("model.diffusion_model."):
            k = k[len("model.diffusion_model."):]
        if k.endswith(".attention.qkv.weight"):
            b = k[:-len(".attention.qkv.weight")]
            assert v.shape[0] % 3 == 0
            q, kk, vv = np.split(v, 3, axis=0)   # torch.chunk(qkv, 3, 0)
            out[b + ".attention.to_q.weight"] = q
            out[b + ".attention.to_k.weight"] = kk
            out[b + ".attention.to_v.weight"] = vv
            continue
        n = k
        if n.startswith("x_embedder."):
            n = "all_x_embedder.2-1." + n[len("x_embedder."):]
        if n.startswith("final_layer."):
            n = "all_final_layer.2-1." + n[len("final_layer."):]
        n = n.replace(".attention.out.", ".attention.to_out.0.")
        n = n.replace(".attention.q_norm.", ".attention.norm_q.").replace(".attention.k_norm.", ".attention.norm_k.")
        out[n] = v
    return out


# ----------------------------------------------------------------------------------------------------
# writing the checkpoint layouts

SHARDS = ["diffusion_pytorch_model-00001-of-00002.safetensors",
          "diffusion_pytorch_model-00002-of-00002.safetensors"]


def weight_files(cname):
    """Relative paths (under the config dir) of the large, generated, git-ignored weight files."""
    f = ["diffusers/transformer/" + s for s in SHARDS] + ["diffusers_single.safetensors", "comfy.safetensors"]
    if cname == "tiny_a":
        f.append("comfy_prefixed_bf16.safetensors")
    return f


def write_layouts(c, W, cdir):
    tdir = os.path.join(cdir, "diffusers", "transformer")
    os.makedirs(tdir, exist_ok=True)
    with open(os.path.join(tdir, "config.json"), "w") as fh:
        json.dump(diffusers_config(c), fh, indent=2, sort_keys=True)
        fh.write("\n")
    names = sorted(W)
    total = sum(W[n].size * 4 for n in names)
    # split in sorted-name order at half the bytes (a block's tensors end up in both shards)
    acc, first = 0, []
    for n in names:
        if acc >= total // 2:
            break
        first.append(n)
        acc += W[n].size * 4
    second = [n for n in names if n not in set(first)]
    meta = {"format": "pt"}
    st.write(os.path.join(tdir, SHARDS[0]), {n: (W[n], "F32") for n in first}, meta)
    st.write(os.path.join(tdir, SHARDS[1]), {n: (W[n], "F32") for n in second}, meta)
    index = {"metadata": {"total_size": total},
             "weight_map": dict([(n, SHARDS[0]) for n in first] + [(n, SHARDS[1]) for n in second])}
    with open(os.path.join(tdir, "diffusion_pytorch_model.safetensors.index.json"), "w") as fh:
        json.dump(index, fh, indent=2, sort_keys=True)
        fh.write("\n")
    st.write(os.path.join(cdir, "diffusers_single.safetensors"), {n: (W[n], "F32") for n in names})
    Wc = to_comfy(W)
    st.write(os.path.join(cdir, "comfy.safetensors"), {n: (v, "F32") for n, v in Wc.items()})
    if c["name"] == "tiny_a":
        Wp = to_comfy(W, "model.diffusion_model.")
        st.write(os.path.join(cdir, "comfy_prefixed_bf16.safetensors"), {n: (v, "BF16") for n, v in Wp.items()},
                 {"format": "pt", "modelspec.architecture": "Z-Image", "note": "zlora tiny test model (bf16)"})


# ----------------------------------------------------------------------------------------------------
# inputs


def gen_inputs(c, case):
    H, Wd, L, t = CASES[case]
    key = "input/" + c["name"] + "/" + case + "/"
    x = randn(key + "x", (c["in_channels"], H, Wd))
    cap = randn(key + "cap", (L, c["cap_feat_dim"]), 1.5)
    return x, np.array([t], dtype=np.float32), cap


# ----------------------------------------------------------------------------------------------------
# LoRA files (config tiny_a) and the reference parser/merger


def _pair(key, out, inn, r, target, scale):
    """down [r,in], up [out,r] with entries of scale*up@down ~ target (rms)."""
    s = math.sqrt(target / (abs(scale) * math.sqrt(r)))
    return randn(key + "/down", (r, inn), s), randn(key + "/up", (out, r), s)


def gen_loras(c, W):
    """{name: (tensors {key: (array, dtype)}, metadata)}; names match LORA_STRENGTH."""
    d = c["dim"]
    std = {k[:-len(".weight")]: float(np.std(v)) for k, v in W.items() if v.ndim == 2}
    att = ["attention.to_q", "attention.to_k", "attention.to_v", "attention.to_out.0"]
    ffn = ["feed_forward.w1", "feed_forward.w2", "feed_forward.w3"]

    def shape(m):
        return W[m + ".weight"].shape

    files = {}

    # ai-toolkit: diffusion_model.<module>.lora_A/B.weight, rank 4, no alpha (scale 1), bf16,
    # layers.* attention + FFN + adaLN_modulation.0
    t = {}
    for i in range(c["n_layers"]):
        for m in att + ffn + ["adaLN_modulation.0"]:
            mod = "layers.%d.%s" % (i, m)
            o, n = shape(mod)
            dn, up = _pair("lora/aitk/" + mod, o, n, 4, 0.3 * std[mod], 1.0)
            t["diffusion_model." + mod + ".lora_A.weight"] = (dn, "BF16")
            t["diffusion_model." + mod + ".lora_B.weight"] = (up, "BF16")
    files["aitk"] = (t, {"format": "pt", "name": "tiny_aitk", "software": '{"name":"ai-toolkit"}'})

    # kohya/musubi: lora_unet_<underscored>.lora_down/lora_up.weight + .alpha (0-dim), rank 8,
    # alpha 4 (scale 0.5), f32, on noise_refiner.0 (incl. adaLN) and context_refiner.0
    t = {}
    mods = ["noise_refiner.0." + m for m in att + ffn + ["adaLN_modulation.0"]]
    mods += ["context_refiner.0." + m for m in att + ffn]
    for mod in mods:
        o, n = shape(mod)
        dn, up = _pair("lora/kohya/" + mod, o, n, 8, 0.3 * std[mod], 0.5)
        k = "lora_unet_" + mod.replace(".", "_")
        t[k + ".lora_down.weight"] = (dn, "F32")
        t[k + ".lora_up.weight"] = (up, "F32")
        t[k + ".alpha"] = (np.array(4.0, dtype=np.float32), "F32")
    files["kohya"] = (t, {"ss_network_module": "networks.lora_zimage", "ss_network_dim": "8",
                          "ss_network_alpha": "4.0", "ss_base_model_version": "z_image",
                          "modelspec.architecture": "Z-Image/lora"})

    # ComfyUI fused: diffusion_model.<block>.attention.qkv.lora_A/B.weight (+ .alpha), f16.
    # Per projection rank 4, alpha 2; fused: down = cat(q,k,v) [12,d], up = block_diag [3d,12],
    # alpha 6 (= 3*2) -> scale 6/12 = 0.5. Also attention.out (ComfyUI name of to_out.0), rank 4 alpha 2.
    t = {}
    for blk in ["layers.0", "layers.1", "context_refiner.0"]:
        downs, ups = [], []
        for q in ("to_q", "to_k", "to_v"):
            mod = blk + ".attention." + q
            dn, up = _pair("lora/comfy/" + mod, d, d, 4, 0.3 * std[mod], 0.5)
            downs.append(dn)
            ups.append(up)
        D = np.concatenate(downs, axis=0)
        U = np.zeros((3 * d, 12), dtype=np.float32)
        for j in range(3):
            U[j * d:(j + 1) * d, j * 4:(j + 1) * 4] = ups[j]
        k = "diffusion_model." + blk + ".attention.qkv"
        t[k + ".lora_A.weight"] = (D, "F16")
        t[k + ".lora_B.weight"] = (U, "F16")
        t[k + ".alpha"] = (np.array(6.0, dtype=np.float32), "F16")
    mod = "layers.1.attention.to_out.0"
    dn, up = _pair("lora/comfy/" + mod, d, d, 4, 0.3 * std[mod], 0.5)
    k = "diffusion_model.layers.1.attention.out"
    t[k + ".lora_A.weight"] = (dn, "F16")
    t[k + ".lora_B.weight"] = (up, "F16")
    t[k + ".alpha"] = (np.array(2.0, dtype=np.float32), "F16")
    files["comfy_qkv"] = (t, None)

    # LoKr (ai-toolkit prefix), bf16. Full factors: alpha is ignored (scale 1) even though it is huge.
    # One module has a decomposed w2 (w2_a @ w2_b, rank 4) and alpha 2 -> scale 2/4 = 0.5.
    t = {}
    for mod, (a0, b0) in [("layers.0.attention.to_q", (4, 4)), ("layers.1.feed_forward.w1", (2, 4))]:
        o, n = shape(mod)
        k = "diffusion_model." + mod
        t[k + ".lokr_w1"] = (randn("lora/lokr/" + mod + "/w1", (a0, b0)), "BF16")
        t[k + ".lokr_w2"] = (randn("lora/lokr/" + mod + "/w2", (o // a0, n // b0), 0.3 * std[mod]), "BF16")
        t[k + ".alpha"] = (np.array(9999999999.0, dtype=np.float32), "BF16")
    mod = "layers.0.adaLN_modulation.0"
    o, n = shape(mod)
    k = "diffusion_model." + mod
    a0, b0, r = 8, 4, 4
    t[k + ".lokr_w1"] = (randn("lora/lokr/" + mod + "/w1", (a0, b0)), "BF16")
    s = math.sqrt(0.3 * std[mod] / (0.5 * math.sqrt(r)))
    t[k + ".lokr_w2_a"] = (randn("lora/lokr/" + mod + "/w2_a", (o // a0, r), s), "BF16")
    t[k + ".lokr_w2_b"] = (randn("lora/lokr/" + mod + "/w2_b", (r, n // b0), s), "BF16")
    t[k + ".alpha"] = (np.array(2.0, dtype=np.float32), "BF16")
    files["lokr"] = (t, {"format": "pt"})

    # LoHa (kohya prefix), f32, rank 4, alpha 2 -> scale 0.5
    t = {}
    for mod in ["layers.1.attention.to_k", "layers.0.feed_forward.w2", "context_refiner.0.attention.to_out.0"]:
        o, n = shape(mod)
        r = 4
        s = (0.3 * std[mod] / (r * 0.5)) ** 0.25
        k = "lora_unet_" + mod.replace(".", "_")
        t[k + ".hada_w1_a"] = (randn("lora/loha/" + mod + "/w1a", (o, r), s), "F32")
        t[k + ".hada_w1_b"] = (randn("lora/loha/" + mod + "/w1b", (r, n), s), "F32")
        t[k + ".hada_w2_a"] = (randn("lora/loha/" + mod + "/w2a", (o, r), s), "F32")
        t[k + ".hada_w2_b"] = (randn("lora/loha/" + mod + "/w2b", (r, n), s), "F32")
        t[k + ".alpha"] = (np.array(2.0, dtype=np.float32), "F32")
    files["loha"] = (t, {"ss_network_module": "lycoris.kohya", "ss_network_dim": "4", "ss_network_alpha": "2.0"})

    # diffusers/PEFT: transformer.<module>.lora_A/B.weight, attention only, all blocks incl. refiners,
    # rank 4, no alpha key (lora_alpha = r in the metadata) -> scale 1, f32
    t = {}
    for p, _ in block_names(c):
        for m in att:
            mod = p + "." + m
            o, n = shape(mod)
            dn, up = _pair("lora/peft/" + mod, o, n, 4, 0.3 * std[mod], 1.0)
            t["transformer." + mod + ".lora_A.weight"] = (dn, "F32")
            t["transformer." + mod + ".lora_B.weight"] = (up, "F32")
    files["peft"] = (t, {"format": "pt", "lora_adapter_metadata": json.dumps(
        {"transformer.r": 4, "transformer.lora_alpha": 4,
         "transformer.target_modules": ["to_k", "to_q", "to_v", "to_out.0"]}, sort_keys=True)})
    return files


LORA_SUFFIXES = [".lora_A.weight", ".lora_B.weight", ".lora_down.weight", ".lora_up.weight", ".alpha",
                 ".hada_w1_a", ".hada_w1_b", ".hada_w2_a", ".hada_w2_b",
                 ".lokr_w1_a", ".lokr_w1_b", ".lokr_w2_a", ".lokr_w2_b", ".lokr_w1", ".lokr_w2"]


def lora_deltas(sd, W):
    """Reference parser: LoRA state dict (values as stored, widened to f32) -> {diffusers weight name:
    float64 ΔW including the alpha scale, excluding the strength}. Independent of gen_loras."""
    modules = sorted({k[:-len(".weight")] for k in W if k.endswith(".weight")})
    native = {}
    for m in modules:
        native[m] = m
        if m.endswith(".attention.to_q"):
            native[m[:-len(".to_q")] + ".qkv"] = m[:-len(".to_q")] + ".qkv"   # fused marker
        if m.endswith(".attention.to_out.0"):
            native[m[:-len(".to_out.0")] + ".out"] = m
    under = {k.replace(".", "_"): v for k, v in native.items()}
    groups = {}
    for k, v in sd.items():
        suf = next(s for s in LORA_SUFFIXES if k.endswith(s))
        groups.setdefault(k[:-len(suf)], {})[suf] = v.astype(np.float64)
    out = {}
    for key, g in groups.items():
        m = None
        for pre in ("diffusion_model.", "transformer.", "lora_unet_", "lycoris_", ""):
            if key.startswith(pre):
                rest = key[len(pre):]
                tbl = under if pre in ("lora_unet_", "lycoris_") else native
                if rest in tbl:
                    m = tbl[rest]
                    break
        assert m is not None, "unmapped LoRA module " + key
        alpha = float(g[".alpha"]) if ".alpha" in g else None
        if ".lora_A.weight" in g or ".lora_down.weight" in g:
            dn = g.get(".lora_A.weight", g.get(".lora_down.weight"))
            up = g.get(".lora_B.weight", g.get(".lora_up.weight"))
            scale = alpha / dn.shape[0] if alpha is not None else 1.0
            dw = scale * (up @ dn)
        elif ".hada_w1_a" in g:
            scale = alpha / g[".hada_w1_b"].shape[0] if alpha is not None else 1.0
            dw = scale * ((g[".hada_w1_a"] @ g[".hada_w1_b"]) * (g[".hada_w2_a"] @ g[".hada_w2_b"]))
        elif any(s.startswith(".lokr") for s in g):
            dim = None
            if ".lokr_w1" in g:
                w1 = g[".lokr_w1"]
            else:
                w1 = g[".lokr_w1_a"] @ g[".lokr_w1_b"]
                dim = g[".lokr_w1_b"].shape[0]
            if ".lokr_w2" in g:
                w2 = g[".lokr_w2"]
            else:
                w2 = g[".lokr_w2_a"] @ g[".lokr_w2_b"]
                dim = g[".lokr_w2_b"].shape[0]
            scale = alpha / dim if (alpha is not None and dim is not None) else 1.0
            dw = scale * np.kron(w1, w2)
        else:
            raise ValueError("unknown adapter " + key)
        if m.endswith(".qkv"):
            b = m[:-len(".qkv")]
            parts = np.split(dw, 3, axis=0)
            for q, part in zip(("to_q", "to_k", "to_v"), parts):
                n = b + "." + q + ".weight"
                out[n] = out.get(n, 0.0) + part
        else:
            n = m + ".weight"
            assert dw.shape == W[n].shape, (key, dw.shape, W[n].shape)
            out[n] = out.get(n, 0.0) + dw
    return out


def merge(W, loras):
    """loras: [(deltas, strength)] -> new f32 weights, W' = W + sum strength*ΔW (summed in f64)."""
    acc = {}
    for deltas, s in loras:
        for n, dw in deltas.items():
            acc[n] = acc.get(n, 0.0) + s * dw
    out = dict(W)
    for n, dw in acc.items():
        out[n] = (W[n].astype(np.float64) + dw).astype(np.float32)
    return out


# ----------------------------------------------------------------------------------------------------
# the forward pass (torch, float32, CPU)

torch = None


def _import_torch():
    global torch
    if torch is None:
        import torch as _t
        torch = _t
        torch.set_num_threads(max(1, min(8, os.cpu_count() or 1)))
    return torch


def T(a):
    return torch.from_numpy(np.ascontiguousarray(np.asarray(a, dtype=np.float32)))


def rmsnorm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def linear(x, W, name, bias=True):
    y = x @ W[name + ".weight"].t()
    if bias and (name + ".bias") in W:
        y = y + W[name + ".bias"]
    return y


def timestep_embedding(W, c, t):
    """sinusoid [cos, sin] of t*t_scale (f32) -> Linear 1024 -> SiLU -> Linear adaln."""
    half = c["freq_dim"] // 2
    k = np.arange(half, dtype=np.float32)
    arg = (np.float32(-math.log(c["max_period"])) * k) / np.float32(half)           # f32 arithmetic
    freqs = np.exp(arg.astype(np.float64)).astype(np.float32)                      # exp, rounded to f32
    tt = np.float32(t) * np.float32(c["t_scale"])
    args = (tt * freqs).astype(np.float32)                                         # f32 product
    e = np.concatenate([np.cos(args.astype(np.float64)), np.sin(args.astype(np.float64))]).astype(np.float32)
    e = T(e).to(W["t_embedder.mlp.0.weight"].dtype)                               # f64 when W is
    h = torch.nn.functional.silu(linear(e[None], W, "t_embedder.mlp.0"))
    return linear(h, W, "t_embedder.mlp.2")[0]                                      # [adaln]


def rope_tables(c, ids):
    """ids [N,3] ints -> cos, sin [N, head_dim/2] (angles in f64, cast to f32, then cos/sin)."""
    ids = np.asarray(ids, dtype=np.int64)
    for a in range(3):
        assert ids[:, a].max() < c["axes_lens"][a], "position beyond axes_lens"
    angs = []
    for a, d in enumerate(c["axes_dims"]):
        freq = 1.0 / (c["rope_theta"] ** (np.arange(0, d, 2, dtype=np.float64) / d))
        angs.append(np.outer(ids[:, a].astype(np.float64), freq))
    ang = np.concatenate(angs, axis=1).astype(np.float32)
    a64 = ang.astype(np.float64)
    return T(np.cos(a64).astype(np.float32)), T(np.sin(a64).astype(np.float32))


def apply_rope(x, cos, sin):
    """x [N, H, hd]; consecutive pairs (2j, 2j+1) rotated by angle j."""
    x0, x1 = x[..., 0::2], x[..., 1::2]
    cs, sn = cos[:, None, :], sin[:, None, :]
    y0 = x0 * cs - x1 * sn
    y1 = x0 * sn + x1 * cs
    return torch.stack([y0, y1], dim=-1).flatten(-2)


def attention(W, p, x, cos, sin, c):
    N, H, hd = x.shape[0], c["n_heads"], c["head_dim"]
    q = linear(x, W, p + ".attention.to_q").view(N, H, hd)
    k = linear(x, W, p + ".attention.to_k").view(N, H, hd)
    v = linear(x, W, p + ".attention.to_v").view(N, H, hd)
    q = rmsnorm(q, W[p + ".attention.norm_q.weight"], c["norm_eps"])
    k = rmsnorm(k, W[p + ".attention.norm_k.weight"], c["norm_eps"])
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    q, k, v = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)           # [H, N, hd]
    s = (q @ k.transpose(1, 2)) / math.sqrt(hd)
    o = torch.softmax(s, dim=-1) @ v                                            # [H, N, hd]
    return linear(o.transpose(0, 1).reshape(N, H * hd), W, p + ".attention.to_out.0")


def ffn(W, p, x):
    a = torch.nn.functional.silu(linear(x, W, p + ".feed_forward.w1"))
    return linear(a * linear(x, W, p + ".feed_forward.w3"), W, p + ".feed_forward.w2")


def block(W, p, x, cos, sin, c, cond):
    eps = c["norm_eps"]
    n = lambda v, name: rmsnorm(v, W[p + "." + name + ".weight"], eps)  # noqa: E731
    if cond is not None:
        m = linear(cond[None], W, p + ".adaLN_modulation.0")[0]
        scale_msa, gate_msa, scale_mlp, gate_mlp = m.chunk(4)
        a = attention(W, p, n(x, "attention_norm1") * (1 + scale_msa), cos, sin, c)
        x = x + torch.tanh(gate_msa) * n(a, "attention_norm2")
        f = ffn(W, p, n(x, "ffn_norm1") * (1 + scale_mlp))
        x = x + torch.tanh(gate_mlp) * n(f, "ffn_norm2")
    else:
        x = x + n(attention(W, p, n(x, "attention_norm1"), cos, sin, c), "attention_norm2")
        x = x + n(ffn(W, p, n(x, "ffn_norm1")), "ffn_norm2")
    return x


def patchify(x):
    C, H, Wd = x.shape
    Ht, Wt = H // 2, Wd // 2
    return x.view(C, 1, 1, Ht, 2, Wt, 2).permute(1, 3, 5, 2, 4, 6, 0).reshape(Ht * Wt, 4 * C)


def unpatchify(y, C, H, Wd):
    Ht, Wt = H // 2, Wd // 2
    return y.view(1, Ht, Wt, 1, 2, 2, C).permute(6, 0, 3, 1, 4, 2, 5).reshape(C, H, Wd)


def forward(Wnp, c, x, t, cap, order="img_first", pad_override=None):
    """Wnp: {diffusers name: np.float32}; x [16,H,W]; t float (1 - sigma); cap [L, cap_feat_dim].
    order: 'img_first' (reference/diffusers) or 'cap_first' (ComfyUI/sd.cpp) in the main layers."""
    _import_torch()
    W = {k: T(v) for k, v in Wnp.items()}
    if pad_override:
        W.update({k: T(v) for k, v in pad_override.items()})
    out = forward_t(W, c, T(x), t, T(cap), order)
    assert out.shape == x.shape
    return out.numpy().copy()


def forward_t(W, c, x, t, cap, order="img_first"):
    """The same forward on torch tensors, differentiable (tests/ref/zimage_grad_ref.py runs autograd
    through it): W {diffusers name: tensor}, x [16,H,W] and cap tensors of W's dtype; returns out [16,H,W]."""
    C, H, Wd = x.shape
    assert C == c["in_channels"] and H % 2 == 0 and Wd % 2 == 0
    Ht, Wt = H // 2, Wd // 2
    m32 = c["seq_multi_of"]
    Ni, L = Ht * Wt, cap.shape[0]
    Np, Lc = Ni + (-Ni) % m32, L + (-L) % m32
    cond = timestep_embedding(W, c, t)

    # image tokens + pad tokens, position ids
    xi = linear(patchify(x), W, "all_x_embedder.2-1")
    xi = torch.cat([xi, W["x_pad_token"].expand(Np - Ni, c["dim"])], 0)
    img_ids = [(Lc + 1, h, w) for h in range(Ht) for w in range(Wt)] + [(0, 0, 0)] * (Np - Ni)
    # caption tokens + pad tokens
    ci = linear(rmsnorm(cap, W["cap_embedder.0.weight"], c["norm_eps"]), W, "cap_embedder.1")
    ci = torch.cat([ci, W["cap_pad_token"].expand(Lc - L, c["dim"])], 0)
    cap_ids = [(1 + j, 0, 0) for j in range(Lc)]

    cos_i, sin_i = rope_tables(c, img_ids)
    cos_c, sin_c = rope_tables(c, cap_ids)
    for i in range(c["n_refiner"]):
        xi = block(W, "noise_refiner.%d" % i, xi, cos_i, sin_i, c, cond)
    for i in range(c["n_refiner"]):
        ci = block(W, "context_refiner.%d" % i, ci, cos_c, sin_c, c, None)

    if order == "img_first":
        u, cos, sin, img0 = torch.cat([xi, ci]), torch.cat([cos_i, cos_c]), torch.cat([sin_i, sin_c]), 0
    else:
        u, cos, sin, img0 = torch.cat([ci, xi]), torch.cat([cos_c, cos_i]), torch.cat([sin_c, sin_i]), Lc
    for i in range(c["n_layers"]):
        u = block(W, "layers.%d" % i, u, cos, sin, c, cond)

    s = 1 + linear(torch.nn.functional.silu(cond)[None], W, "all_final_layer.2-1.adaLN_modulation.1")
    un = torch.nn.functional.layer_norm(u, (c["dim"],), None, None, 1e-6)
    y = linear(un * s, W, "all_final_layer.2-1.linear")
    return unpatchify(y[img0:img0 + Ni], C, H, Wd)


# ----------------------------------------------------------------------------------------------------
# a second, differently written float64 numpy forward (explicit index formulas and loops), used only to
# cross-check the torch forward above against coding slips (reshapes, transposes, pair layout)


def forward_np64(Wnp, c, x, t, cap):
    W = {k: v.astype(np.float64) for k, v in Wnp.items()}
    eps, d, nh, hd = c["norm_eps"], c["dim"], c["n_heads"], c["head_dim"]
    C, H, Wd = x.shape
    Ht, Wt = H // 2, Wd // 2
    Ni, L = Ht * Wt, cap.shape[0]
    Np, Lc = -(-Ni // 32) * 32, -(-L // 32) * 32

    def lin(v, name):
        y = v @ W[name + ".weight"].T
        return y + W[name + ".bias"] if name + ".bias" in W else y

    def rms(v, w):
        return v / np.sqrt(np.mean(v * v, axis=-1, keepdims=True) + eps) * w

    def silu(v):
        return v / (1.0 + np.exp(-v))

    # timestep: [cos, sin] of t*1000*exp(-ln(1e4) k/128)
    k = np.arange(128)
    ang = float(np.float32(t)) * c["t_scale"] * np.exp(-math.log(c["max_period"]) * k / 128.0)
    cond = lin(silu(lin(np.concatenate([np.cos(ang), np.sin(ang)]), "t_embedder.mlp.0")), "t_embedder.mlp.2")

    # patches by the spec's index formula
    P = np.zeros((Ni, 64))
    for h in range(Ht):
        for w in range(Wt):
            for ph in range(2):
                for pw in range(2):
                    P[h * Wt + w, (ph * 2 + pw) * 16:(ph * 2 + pw) * 16 + 16] = x[:, 2 * h + ph, 2 * w + pw]
    xi = np.concatenate([lin(P, "all_x_embedder.2-1"), np.repeat(W["x_pad_token"], Np - Ni, 0)])
    ci = np.concatenate([lin(rms(cap.astype(np.float64), W["cap_embedder.0.weight"]), "cap_embedder.1"),
                         np.repeat(W["cap_pad_token"], Lc - L, 0)])
    ids_i = np.zeros((Np, 3), np.int64)
    for n in range(Ni):
        ids_i[n] = (Lc + 1, n // Wt, n % Wt)
    ids_c = np.stack([np.arange(1, Lc + 1), np.zeros(Lc, np.int64), np.zeros(Lc, np.int64)], 1)

    def angles(ids):
        a = np.zeros((len(ids), hd // 2))
        j = 0
        for ax, da in enumerate(c["axes_dims"]):
            for kk in range(da // 2):
                a[:, j] = ids[:, ax] * c["rope_theta"] ** (-2.0 * kk / da)
                j += 1
        return a.astype(np.float32).astype(np.float64)

    def rope(v, a):          # v [N, hd]
        out = v.copy()
        cs, sn = np.cos(a), np.sin(a)
        out[:, 0::2] = v[:, 0::2] * cs - v[:, 1::2] * sn
        out[:, 1::2] = v[:, 0::2] * sn + v[:, 1::2] * cs
        return out

    def attn(p, v, a):
        q, kk, vv = lin(v, p + ".attention.to_q"), lin(v, p + ".attention.to_k"), lin(v, p + ".attention.to_v")
        o = np.zeros_like(q)
        for h in range(nh):
            sl = slice(h * hd, (h + 1) * hd)
            qh = rope(rms(q[:, sl], W[p + ".attention.norm_q.weight"]), a)
            kh = rope(rms(kk[:, sl], W[p + ".attention.norm_k.weight"]), a)
            s = qh @ kh.T / math.sqrt(hd)
            e = np.exp(s - s.max(1, keepdims=True))
            o[:, sl] = (e / e.sum(1, keepdims=True)) @ vv[:, sl]
        return lin(o, p + ".attention.to_out.0")

    def blk(p, v, a, mod):
        nw = lambda name: W[p + "." + name + ".weight"]  # noqa: E731
        ff = lambda u: lin(silu(lin(u, p + ".feed_forward.w1")) * lin(u, p + ".feed_forward.w3"), p + ".feed_forward.w2")  # noqa: E731
        if mod:
            m = lin(cond, p + ".adaLN_modulation.0")
            sa, ga, sm, gm = m[:d], m[d:2 * d], m[2 * d:3 * d], m[3 * d:]
            v = v + np.tanh(ga) * rms(attn(p, rms(v, nw("attention_norm1")) * (1 + sa), a), nw("attention_norm2"))
            return v + np.tanh(gm) * rms(ff(rms(v, nw("ffn_norm1")) * (1 + sm)), nw("ffn_norm2"))
        v = v + rms(attn(p, rms(v, nw("attention_norm1")), a), nw("attention_norm2"))
        return v + rms(ff(rms(v, nw("ffn_norm1"))), nw("ffn_norm2"))

    ai, ac = angles(ids_i), angles(ids_c)
    for i in range(c["n_refiner"]):
        xi = blk("noise_refiner.%d" % i, xi, ai, True)
        ci = blk("context_refiner.%d" % i, ci, ac, False)
    u, a = np.concatenate([xi, ci]), np.concatenate([ai, ac])
    for i in range(c["n_layers"]):
        u = blk("layers.%d" % i, u, a, True)
    s = 1 + lin(silu(cond), "all_final_layer.2-1.adaLN_modulation.1")
    un = (u - u.mean(1, keepdims=True)) / np.sqrt(u.var(1, keepdims=True) + 1e-6)
    y = lin(un * s, "all_final_layer.2-1.linear")
    out = np.zeros((C, H, Wd))
    for n in range(Ni):
        h, w = divmod(n, Wt)
        for ph in range(2):
            for pw in range(2):
                out[:, 2 * h + ph, 2 * w + pw] = y[n, (ph * 2 + pw) * 16:(ph * 2 + pw) * 16 + 16]
    return out


# ----------------------------------------------------------------------------------------------------
# self-checks


def rel(a, b):
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def check_primitives(c):
    _import_torch()
    # bf16 rounding agrees with torch's (round to nearest even)
    a = np.concatenate([randn("chk/bf16", (4096,), 3.0), np.array([1.00390625, 1.01171875, -2.0 ** -130,
                                                                   65504.0, 3.3895314e38], np.float32)])
    assert np.array_equal(st.round_bf16(a), torch.from_numpy(a).to(torch.bfloat16).float().numpy())
    # patchify: the spec's feature index ((ph*2+pw)*16+c), token index h*Wt+w; unpatchify inverts it
    x = T(randn("chk/patch", (16, 6, 10)))
    p = patchify(x)
    for (h, w, ph, pw, ch) in [(0, 0, 0, 0, 0), (2, 4, 1, 0, 5), (1, 3, 1, 1, 15), (2, 1, 0, 1, 7)]:
        assert p[h * 5 + w, (ph * 2 + pw) * 16 + ch] == x[ch, 2 * h + ph, 2 * w + pw]
    assert torch.equal(unpatchify(p, 16, 6, 10), x)
    # RoPE: interleaved pairs == complex multiplication (the reference's view_as_complex form)
    ids = [(5, 2, 3), (0, 0, 0), (70, 1, 0)]
    cos, sin = rope_tables(c, ids)
    q = T(randn("chk/rope", (3, 2, c["head_dim"])))
    z = torch.view_as_complex(q.reshape(3, 2, -1, 2).contiguous()) * torch.polar(torch.ones_like(cos), torch.atan2(sin, cos))[:, None]
    assert torch.allclose(apply_rope(q, cos, sin), torch.view_as_real(z).flatten(2), atol=1e-5)
    # axis layout: dims 0..d0-1 use the frame id only
    cos2, _ = rope_tables(c, [(5, 0, 0)])
    d0 = c["axes_dims"][0] // 2
    assert torch.all(cos2[0, d0:] == 1.0) and not torch.all(cos2[0, :d0] == 1.0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "zimage"))
    ap.add_argument("--weights-only", action="store_true",
                    help="numpy only: regenerate the git-ignored weight files and verify weights.sha256")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    out = args.out
    os.makedirs(out, exist_ok=True)

    cfgs = {n: full_cfg(n) for n in CONFIGS}
    weights = {}
    for n, c in cfgs.items():
        W = gen_weights(c)
        assert sorted(W) == expected_names(c)
        weights[n] = W
        write_layouts(c, W, os.path.join(out, n))
    lines = st.manifest_lines(out, CONFIGS, weight_files)
    if st.sync_manifest(out, lines, args.weights_only, "weights"):
        return

    _import_torch()
    log = print if args.verbose else (lambda *a: None)
    for n, c in cfgs.items():
        cdir = os.path.join(out, n)
        W = weights[n]
        check_primitives(c)

        # every layout read back gives exactly the generated weights
        rd = lambda p: st.read(os.path.join(cdir, p))[0]  # noqa: E731
        tdir = "diffusers/transformer/"
        sh = {}
        for s in SHARDS:
            sh.update(rd(tdir + s))
        with open(os.path.join(cdir, tdir, "diffusion_pytorch_model.safetensors.index.json")) as fh:
            idx = json.load(fh)
        assert sorted(idx["weight_map"]) == sorted(W) and sorted(sh) == sorted(W)
        assert idx["metadata"]["total_size"] == sum(v.size * 4 for v in W.values())
        single = rd("diffusers_single.safetensors")
        comfy = rd("comfy.safetensors")
        assert len(comfy) == len(W) - 2 * (c["n_layers"] + 2 * c["n_refiner"])
        back = from_comfy(comfy)
        for k in W:
            assert np.array_equal(sh[k], W[k]) and np.array_equal(single[k], W[k]), k
            assert np.array_equal(back[k], W[k]), k
        assert sorted(back) == sorted(W)

        for case in CASES:
            x, t, cap = gen_inputs(c, case)
            st.write(os.path.join(cdir, "in_%s.safetensors" % case), {"x": x, "t": t, "cap": cap})
            o = forward(W, c, x, float(t[0]), cap)
            assert o.shape == x.shape and np.all(np.isfinite(o))
            # ComfyUI layout converted back: identical output
            assert np.array_equal(forward(back, c, x, float(t[0]), cap), o)
            # [caption, image] order in the main layers: same output up to rounding
            o2 = forward(W, c, x, float(t[0]), cap, order="cap_first")
            assert np.max(np.abs(o2 - o)) < 1e-5 * max(1.0, float(np.max(np.abs(o)))), np.max(np.abs(o2 - o))
            # the independent float64 loop implementation agrees
            r64 = rel(o, forward_np64(W, c, x, float(t[0]), cap))
            assert r64 < 2e-5, r64
            st.write(os.path.join(cdir, "out_%s.safetensors" % case), {"out": o})
            # sanity: O(1) output; caption, t and the (attended) pad tokens all matter
            assert 0.3 < float(np.std(o)) < 3.0, np.std(o)
            cap2 = randn("chk/cap2/" + case, cap.shape, 1.5)
            r_cap = rel(forward(W, c, x, float(t[0]), cap2), o)
            r_t = rel(forward(W, c, x, float(t[0]) + 0.05, cap), o)
            r_x = rel(forward(W, c, x + 0.1 * randn("chk/dx", x.shape), float(t[0]), cap), o)
            assert r_cap > 1e-2 and r_t > 1e-3 and r_x > 1e-2, (r_cap, r_t, r_x)
            Np_pad = (-(x.shape[1] // 2 * x.shape[2] // 2)) % 32
            if Np_pad or (-cap.shape[0]) % 32:
                po = {"x_pad_token": W["x_pad_token"] + 0.5, "cap_pad_token": W["cap_pad_token"] - 0.5}
                r_pad = rel(forward(W, c, x, float(t[0]), cap, pad_override=po), o)
                assert r_pad > 1e-3, r_pad
            else:
                r_pad = 0.0
                po = {"x_pad_token": W["x_pad_token"] + 5, "cap_pad_token": W["cap_pad_token"] - 5}
                assert np.array_equal(forward(W, c, x, float(t[0]), cap, pad_override=po), o)
            log("%s %s: std(out)=%.3f  vs f64 loops %.1e  cap-first max|diff| %.1e  rel change: cap %.3f"
                "  t+0.05 %.3f  x+0.1dx %.3f  pads %.3f" % (n, case, np.std(o), r64, np.max(np.abs(o2 - o)),
                                                         r_cap, r_t, r_x, r_pad))

        if n == "tiny_a":
            Wb = {k: st.round_bf16(v) for k, v in W.items()}
            pb = st.read(os.path.join(cdir, "comfy_prefixed_bf16.safetensors"))[0]
            assert all(k.startswith("model.diffusion_model.") for k in pb)
            assert all(d == "BF16" for d in st.dtypes(os.path.join(cdir, "comfy_prefixed_bf16.safetensors")).values())
            bb = from_comfy(pb)
            assert sorted(bb) == sorted(W) and all(np.array_equal(bb[k], Wb[k]) for k in W)
            ldir = os.path.join(cdir, "lora")
            os.makedirs(ldir, exist_ok=True)
            deltas = {}
            for ln, (tens, meta) in gen_loras(c, W).items():
                p = os.path.join(ldir, "lora_%s.safetensors" % ln)
                st.write(p, tens, meta)
                deltas[ln] = lora_deltas(st.read(p)[0], W)
            # every ΔW is a sizeable but not dominant fraction of its weight
            for ln, dl in deltas.items():
                for k, dw in dl.items():
                    r = np.sqrt(np.mean(dw ** 2)) / np.std(W[k])
                    assert 0.05 < r < 1.0, (ln, k, r)
            for case in CASES:
                x, t, cap = gen_inputs(c, case)
                o = st.read(os.path.join(cdir, "out_%s.safetensors" % case))[0]["out"]
                ob = forward(Wb, c, x, float(t[0]), cap)
                st.write(os.path.join(cdir, "out_bf16_%s.safetensors" % case), {"out": ob})
                log("tiny_a %s: bf16 weights rel diff %.2e" % (case, rel(ob, o)))
                assert 1e-5 < rel(ob, o) < 5e-2
                for ln, s in LORA_STRENGTH.items():
                    ol = forward(merge(W, [(deltas[ln], s)]), c, x, float(t[0]), cap)
                    r = rel(ol, o)
                    log("tiny_a %s: lora %-9s strength %.1f rel change %.3f" % (case, ln, s, r))
                    assert 2e-3 < r < 1.0, (ln, r)
                    st.write(os.path.join(cdir, "out_lora_%s_%s.safetensors" % (ln, case)), {"out": ol})
                os_ = forward(merge(W, [(deltas[a], s) for a, s in STACK]), c, x, float(t[0]), cap)
                log("tiny_a %s: stack rel change %.3f" % (case, rel(os_, o)))
                assert rel(os_, o) > 2e-3
                st.write(os.path.join(cdir, "out_lora_stack_%s.safetensors" % case), {"out": os_})
            # a fused qkv LoRA equals the same factors as separate to_q/to_k/to_v LoRAs
            sd = st.read(os.path.join(ldir, "lora_comfy_qkv.safetensors"))[0]
            split = {}
            for blk in ["layers.0", "layers.1", "context_refiner.0"]:
                A = sd["diffusion_model.%s.attention.qkv.lora_A.weight" % blk]
                B = sd["diffusion_model.%s.attention.qkv.lora_B.weight" % blk]
                r = A.shape[0] // 3
                for j, q in enumerate(("to_q", "to_k", "to_v")):
                    dmn = c["dim"]
                    split["diffusion_model.%s.attention.%s.lora_A.weight" % (blk, q)] = A[j * r:(j + 1) * r]
                    split["diffusion_model.%s.attention.%s.lora_B.weight" % (blk, q)] = B[j * dmn:(j + 1) * dmn, j * r:(j + 1) * r]
                    split["diffusion_model.%s.attention.%s.alpha" % (blk, q)] = np.array(2.0, np.float32)
            for k in ("lora_A.weight", "lora_B.weight", "alpha"):
                split["diffusion_model.layers.1.attention.to_out.0." + k] = sd["diffusion_model.layers.1.attention.out." + k]
            ds = lora_deltas(split, W)
            assert sorted(ds) == sorted(deltas["comfy_qkv"])
            for k in ds:
                assert np.allclose(ds[k], deltas["comfy_qkv"][k], rtol=0, atol=1e-12), k
    print("zimage_ref: wrote %s (self-checks passed)" % out)


if __name__ == "__main__":
    main()
