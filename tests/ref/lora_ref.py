#!/usr/bin/env python3
"""lora_ref.py — an independent reference for LoRA files (python3 + numpy only).

Usage: python3 tests/ref/lora_ref.py OUTDIR

Writes, deterministically (fixed seeds), into OUTDIR:
  * Z-Image LoRA files at the real shapes (dim 3840, FFN 10240, adaLN 256) for a few blocks, one per
    naming scheme and adapter type (see ../shared/spec/lora-formats.md §1, §2, §5), in fp32/bf16/fp16;
  * foreign LoRAs (SD1.5, SDXL, FLUX.1, Lumina-2, Qwen-Image, Wan) at their real shapes (§6);
  * broken files (missing half, rank mismatch, NaN/inf alpha, alpha only, truncated);
  * <stem>.probes.safetensors for every Z-Image file: per module `<canonical>.x` [in,3] and
    `<canonical>.y` [out,3] = ΔW @ x computed in float64 from the *stored* (dtype-rounded) values with
    the spec's scale rules (vectors: only `.y` = the diff as [out,1]). Probe x depends only on the
    canonical name, so two files touching the same target share it. DoRA files get no ΔW probes but,
    for two small modules, `<canonical>.base` (a base weight W), `.x`, `.y1` = W'(s=1) @ x and
    `.y05` = W'(s=0.5) @ x with W' from spec §2 (norm of W+ΔW per output row when the magnitude has
    `out` entries, per input column otherwise);
  * expected.json: {file: {family, format, qkv, adapters, rank, alpha, modules, ...}}.
The probes are computed without materialising ΔW (low-rank / Kronecker identities); `--selfcheck`
recomputes them through dense ΔW (a second numpy path) and compares.
"""
import json
import os
import struct
import sys
import zlib

import numpy as np

DIM, FFN, ADA, HEAD = 3840, 10240, 256, 128

# ----------------------------------------------------------------------------------------------------
# safetensors writer and dtype rounding


def write_safetensors(path, tensors, metadata=None):
    """tensors: {name: (dtype_str, shape, bytes)}; header keys sorted, padded with spaces to 8."""
    header, offset, blobs = {}, 0, []
    if metadata is not None:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name in sorted(tensors):
        dt, shape, data = tensors[name]
        header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    h = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    h += b" " * ((-len(h)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def f32_to_bf16_bits(a):
    """Round-to-nearest-even float32 -> bf16 bits (NaN kept NaN)."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(np.asarray(a, dtype=np.float32))
    r[nan] = 0x7FC0
    return r


def bf16_bits_to_f64(b):
    return (b.astype(np.uint32) << 16).view(np.float32).astype(np.float64)


def store(a, dt):
    """Returns ((dtype_str, shape, bytes), float64 values as stored)."""
    a = np.asarray(a, dtype=np.float32)
    if dt == "F32":
        return ("F32", a.shape, a.astype("<f4").tobytes()), a.astype(np.float64)
    if dt == "F16":
        h = a.astype("<f2")
        return ("F16", a.shape, h.tobytes()), h.astype(np.float64)
    if dt == "BF16":
        b = f32_to_bf16_bits(a)
        return ("BF16", a.shape, b.astype("<u2").tobytes()), bf16_bits_to_f64(b).reshape(a.shape)
    raise ValueError(dt)


# ----------------------------------------------------------------------------------------------------
# Z-Image module shapes and naming


def zshape(c):
    """(out, in) of a canonical Z-Image module; in = 0 for vectors."""
    top = {"all_x_embedder.2-1": (DIM, 64), "cap_embedder.1": (DIM, 2560), "t_embedder.mlp.0": (1024, 256),
           "t_embedder.mlp.2": (256, 1024), "all_final_layer.2-1.linear": (64, DIM),
           "all_final_layer.2-1.adaLN_modulation.1": (DIM, 256)}
    if c in top:
        return top[c]
    tail = c.split(".", 2)[2]
    if tail in ("attention.to_q", "attention.to_k", "attention.to_v", "attention.to_out.0"):
        return (DIM, DIM)
    if tail == "attention.qkv":
        return (3 * DIM, DIM)
    if tail in ("feed_forward.w1", "feed_forward.w3"):
        return (FFN, DIM)
    if tail == "feed_forward.w2":
        return (DIM, FFN)
    if tail == "adaLN_modulation.0":
        return (4 * DIM, ADA)
    if tail in ("attention_norm1", "attention_norm2", "ffn_norm1", "ffn_norm2"):
        return (DIM, 0)
    if tail in ("attention.norm_q", "attention.norm_k"):
        return (HEAD, 0)
    raise KeyError(c)


def native(c):
    """ComfyUI/native spelling of a canonical (or fused) name."""
    return c.replace("attention.to_out.0", "attention.out")


def keyname(style, c):
    """Module key (before the adapter suffix) of canonical name c in a naming style."""
    if style == "diffusers":
        return "transformer." + c
    if style == "peft":
        return "base_model.model." + c
    if style == "ai-toolkit":
        return "diffusion_model." + c
    if style in ("diffsynth", "bare"):
        return c
    if style == "kohya":
        return "lora_unet_" + c.replace(".", "_")
    if style == "lycoris":
        return "lycoris_" + c.replace(".", "_")
    if style == "comfy":           # ComfyUI native names (fused qkv, attention.out), ai-toolkit prefix
        return "diffusion_model." + native(c)
    if style == "kohya-comfy":     # musubi -> ComfyUI converter: kohya prefix on native names
        return "lora_unet_" + native(c).replace(".", "_")
    if style == "raw":             # foreign files: the key is given verbatim
        return c
    raise ValueError(style)


LORA_SUFFIX = {  # style -> (down, up)
    "diffusers": (".lora_A.weight", ".lora_B.weight"), "peft": (".lora_A.weight", ".lora_B.weight"),
    "ai-toolkit": (".lora_A.weight", ".lora_B.weight"), "bare": (".lora_A.weight", ".lora_B.weight"),
    "comfy": (".lora_A.weight", ".lora_B.weight"),
    "diffsynth": (".lora_A.default.weight", ".lora_B.default.weight"),
    "kohya": (".lora_down.weight", ".lora_up.weight"), "lycoris": (".lora_down.weight", ".lora_up.weight"),
    "kohya-comfy": (".lora_down.weight", ".lora_up.weight"),
}

ATT = ["attention.to_q", "attention.to_k", "attention.to_v", "attention.to_out.0"]
FF = ["feed_forward.w1", "feed_forward.w2", "feed_forward.w3"]
TOP5 = ["all_x_embedder.2-1", "cap_embedder.1", "t_embedder.mlp.0", "all_final_layer.2-1.linear",
        "all_final_layer.2-1.adaLN_modulation.1"]


def blk(b, tails):
    return [b + "." + t for t in tails]


def rng_for(*parts):
    return np.random.default_rng(zlib.crc32("/".join(str(p) for p in parts).encode()))


def probe_x(c, n_in):
    return rng_for("probe", c).standard_normal((n_in, 3)).astype(np.float32)


# ----------------------------------------------------------------------------------------------------
# adapters: each builder returns a module record with stored tensors and a float64 apply(x)


class Module:
    def __init__(self, target, kind, out, inn, fused=False):
        self.target, self.kind, self.out, self.inn, self.fused = target, kind, out, inn, fused
        self.parts = {}        # suffix -> (stored tuple, float64 values)
        self.alpha = None      # float64 of the stored alpha, or None
        self.rank = 0
        self.dora = False
        self.scale = 1.0

    def put(self, suffix, arr, dt):
        self.parts[suffix] = store(arr, dt)
        return self.parts[suffix][1]

    def put_alpha(self, a, dt):
        st, v = store(np.array(a, dtype=np.float32).reshape(()), dt)
        self.parts[".alpha"] = (st, v)
        self.alpha = float(v)

    def v(self, suffix):
        return self.parts[suffix][1]


def sigma_for(scale, r, target=1e-2):
    """Std of factors so that entries of scale * up @ down are ~target."""
    return float(np.sqrt(target / (abs(scale) * np.sqrt(r))))


def make_lora(c, r, dt, style, alpha=None, fused_from=None, dora=None, seed=""):
    """LoRA module. fused_from: build a fused qkv from per-projection rank r (down cat, up block-diag)."""
    out, inn = zshape(c) if style != "raw" else fused_from
    g = rng_for("lora", seed, c, style)
    dn, up_s = LORA_SUFFIX[style]
    m = Module(c, "lora", out, inn, fused=c.endswith("attention.qkv"))
    if m.fused:
        rr = 3 * r
        scale = (alpha / rr) if alpha is not None else 1.0
        s = sigma_for(scale, rr)
        downs = [g.standard_normal((r, inn)) * s for _ in range(3)]
        ups = [g.standard_normal((DIM, r)) * s for _ in range(3)]
        down = np.concatenate(downs, 0)
        up = np.zeros((3 * DIM, 3 * r))
        for i in range(3):
            up[i * DIM:(i + 1) * DIM, i * r:(i + 1) * r] = ups[i]
    else:
        rr = r
        scale = (alpha / rr) if alpha is not None else 1.0
        s = sigma_for(scale, rr)
        down = g.standard_normal((rr, inn)) * s
        up = g.standard_normal((out, rr)) * s
    m.put(dn, down, dt)
    m.put(up_s, up, dt)
    m.down_s, m.up_s = dn, up_s
    if alpha is not None:
        m.put_alpha(alpha, dt)
    m.rank = rr
    m.scale = (m.alpha / rr) if m.alpha is not None else 1.0
    if dora is not None:
        m.dora = True
        suffix, shape = dora
        if shape == "row":
            mag = np.abs(1.0 + 0.1 * g.standard_normal((out, 1)))
        elif shape == "vec":
            mag = np.abs(1.0 + 0.1 * g.standard_normal((out,)))
        else:
            mag = np.abs(1.0 + 0.1 * g.standard_normal((1, inn)))
        m.put(suffix, mag, dt)
        m.dora_suffix = suffix
    return m


def apply_lora(m, x):
    return m.scale * (m.v(m.up_s) @ (m.v(m.down_s) @ x))


def dense_lora(m):
    return m.scale * (m.v(m.up_s) @ m.v(m.down_s))


def make_loha(c, r, dt, alpha, seed=""):
    out, inn = zshape(c)
    g = rng_for("loha", seed, c)
    m = Module(c, "loha", out, inn)
    scale = alpha / r
    # entries of (w1a@w1b) ~ s^2 sqrt(r); product of two ~ s^4 r; times scale ~ 1e-2
    s = float((1e-2 / (scale * r)) ** 0.25)
    m.put(".hada_w1_a", g.standard_normal((out, r)) * s, dt)
    m.put(".hada_w1_b", g.standard_normal((r, inn)) * s, dt)
    m.put(".hada_w2_a", g.standard_normal((out, r)) * s, dt)
    m.put(".hada_w2_b", g.standard_normal((r, inn)) * s, dt)
    m.put_alpha(alpha, dt)
    m.rank = r
    m.scale = m.alpha / r
    return m


def apply_loha(m, x):
    """((w1a@w1b) ⊙ (w2a@w2b)) @ x = Σ_jk (w1a[:,j]⊙w2a[:,k]) ((w1b[j]⊙w2b[k]) @ x): never dense."""
    w1a, w1b, w2a, w2b = (m.v(s) for s in (".hada_w1_a", ".hada_w1_b", ".hada_w2_a", ".hada_w2_b"))
    r1, r2 = w1b.shape[0], w2b.shape[0]
    left = (w1a[:, :, None] * w2a[:, None, :]).reshape(w1a.shape[0], r1 * r2)
    right = (w1b[:, None, :] * w2b[None, :, :]).reshape(r1 * r2, w1b.shape[1])
    return m.scale * (left @ (right @ x))


def dense_loha(m):
    w1a, w1b, w2a, w2b = (m.v(s) for s in (".hada_w1_a", ".hada_w1_b", ".hada_w2_a", ".hada_w2_b"))
    return m.scale * ((w1a @ w1b) * (w2a @ w2b))


def make_lokr(c, dt, f1, alpha, w2_rank=0, w1_rank=0, seed=""):
    """LoKr with w1 [f1[0], f1[1]]; w2 [out/f1[0], in/f1[1]] (factored when w2_rank); w1 factored when
    w1_rank. scale = alpha/dim only when a factor is decomposed, else 1 (alpha ignored)."""
    out, inn = zshape(c)
    a, b = f1
    cc, d = out // a, inn // b
    assert a * cc == out and b * d == inn
    g = rng_for("lokr", seed, c)
    m = Module(c, "lokr", out, inn)
    dim = w1_rank or w2_rank
    scale = (alpha / dim) if dim else 1.0
    s = float(np.sqrt(1e-2 / scale))  # entries of kron = w1_ij * w2_kl
    if w1_rank:
        t = float(np.sqrt(s / np.sqrt(w1_rank)))
        m.put(".lokr_w1_a", g.standard_normal((a, w1_rank)) * t, dt)
        m.put(".lokr_w1_b", g.standard_normal((w1_rank, b)) * t, dt)
    else:
        m.put(".lokr_w1", g.standard_normal((a, b)) * s, dt)
    if w2_rank:
        t = float(np.sqrt(s / np.sqrt(w2_rank)))
        m.put(".lokr_w2_a", g.standard_normal((cc, w2_rank)) * t, dt)
        m.put(".lokr_w2_b", g.standard_normal((w2_rank, d)) * t, dt)
    else:
        m.put(".lokr_w2", g.standard_normal((cc, d)) * s, dt)
    m.put_alpha(alpha, dt)
    m.rank = dim
    m.scale = (m.alpha / dim) if dim else 1.0
    return m


def lokr_factors(m):
    w1 = m.v(".lokr_w1") if ".lokr_w1" in m.parts else m.v(".lokr_w1_a") @ m.v(".lokr_w1_b")
    w2 = m.v(".lokr_w2") if ".lokr_w2" in m.parts else m.v(".lokr_w2_a") @ m.v(".lokr_w2_b")
    return w1, w2


def apply_lokr(m, x):
    """kron(A,B) @ x: y[i*c+k] = (A @ X @ B^T)[i,k] with X[j,l] = x[j*d+l]."""
    A, B = lokr_factors(m)
    a, b = A.shape
    c, d = B.shape
    ys = [(A @ x[:, t].reshape(b, d) @ B.T).reshape(a * c) for t in range(x.shape[1])]
    return m.scale * np.stack(ys, 1)


def dense_lokr(m):
    A, B = lokr_factors(m)
    return m.scale * np.kron(A, B)


def make_diff(c, dt, bias=False, seed=""):
    out, inn = zshape(c)
    g = rng_for("diff", seed, c)
    m = Module(c, "diff", out, inn)
    if inn:
        m.put(".diff", g.standard_normal((out, inn)) * 1e-2, dt)
    else:
        m.put(".diff", g.standard_normal((out,)) * 1e-2, dt)
    if bias:
        m.put(".diff_b", g.standard_normal((out,)) * 1e-2, dt)
    return m


def apply_module(m, x):
    return {"lora": apply_lora, "loha": apply_loha, "lokr": apply_lokr,
            "diff": lambda m, x: m.v(".diff") @ x}[m.kind](m, x)


def dense_module(m):
    return {"lora": dense_lora, "loha": dense_loha, "lokr": dense_lokr,
            "diff": lambda m: m.v(".diff")}[m.kind](m)


# ----------------------------------------------------------------------------------------------------
# files


FILES = {}      # name -> dict(entry for expected.json, modules, tensors, metadata)


def add_file(name, style, mods, family="z-image", fmt=None, qkv=None, metadata=None, extra=None,
             probes=True, dtype="F32", roundtrip=None):
    tensors = {}
    for m in mods:
        base = keyname(style, m.target)
        for suf, (st, _) in m.parts.items():
            k = base + suf
            assert k not in tensors, k
            tensors[k] = st
    for k, st in (extra or {}).items():
        tensors[k] = st
    adapters = {}
    for m in mods:
        adapters[m.kind] = adapters.get(m.kind, 0) + 1
    alphas = sorted({m.alpha for m in mods if m.alpha is not None})
    assert len(alphas) <= 1, name
    ranks = sorted({m.rank for m in mods})
    exp = {
        "family": family, "format": fmt, "qkv": qkv, "adapters": adapters,
        "rank": max(ranks), "ranks": ranks,
        "alpha": alphas[0] if alphas else None, "modules": len(mods), "nkeys": len(tensors),
        "dtype": dtype, "precision": "fp32" if dtype == "F32" else dtype.lower(),
        "dora": sum(1 for m in mods if m.dora), "broken": False,
    }
    if family == "z-image":
        exp["mods"] = [{"target": m.target, "fused": m.fused, "kind": m.kind, "rank": m.rank,
                        "alpha": m.alpha, "dora": m.dora, "out": m.out, "in": m.inn,
                        "scale": m.scale} for m in mods]
        exp["lokr"] = any(m.kind == "lokr" for m in mods)
        exp["roundtrip"] = (roundtrip if roundtrip is not None else
                            not exp["dora"] and all(m.kind in ("lora", "loha", "diff") for m in mods))
    FILES[name] = {"exp": exp, "mods": mods, "tensors": tensors, "metadata": metadata, "style": style,
                   "probes": probes and family == "z-image"}


def zimage_files():
    # (1) diffusers / PEFT (ZImagePipeline.save_lora_weights): transformer.X.lora_A/B.weight, no alpha
    c = blk("layers.0", ATT + FF + ["adaLN_modulation.0"]) + blk("context_refiner.0", ATT)
    meta = {"format": "pt", "lora_adapter_metadata": json.dumps(
        {"transformer.r": 4, "transformer.lora_alpha": 4, "transformer.lora_dropout": 0.0,
         "transformer.init_lora_weights": True, "transformer.use_dora": False, "transformer.bias": "none",
         "transformer.target_modules": ["to_q", "to_k", "to_v", "to_out.0", "w1", "w2", "w3",
                                        "adaLN_modulation.0"]}, sort_keys=True)}
    add_file("zi_diffusers.safetensors", "diffusers", [make_lora(x, 4, "F32", "diffusers") for x in c],
             fmt="diffusers", qkv="split", metadata=meta)
    FILES["zi_diffusers.safetensors"]["exp"]["resize1"] = {}   # filled by write_probes

    # (1b) diffusers with lora_alpha != r only in metadata: spec §2/§8 says metadata never scales (scale 1)
    meta2 = {"format": "pt", "lora_adapter_metadata": json.dumps(
        {"transformer.r": 4, "transformer.lora_alpha": 8, "transformer.target_modules":
         ["to_q", "to_k", "to_v", "to_out.0"]}, sort_keys=True)}
    add_file("zi_diffusers_meta_alpha.safetensors", "diffusers",
             [make_lora(x, 4, "F32", "diffusers", seed="ma") for x in blk("layers.29", ATT)],
             fmt="diffusers", qkv="split", metadata=meta2)

    # (2) ai-toolkit bf16: diffusion_model.X.lora_A/B.weight, incl. top-level modules
    c = blk("layers.29", ATT + ["feed_forward.w2", "adaLN_modulation.0"]) + TOP5
    meta = {"format": "pt", "software": json.dumps({"name": "ai-toolkit", "repo": "https://github.com/ostris/ai-toolkit",
                                                    "version": "0.7.0"}),
            "ss_base_model_version": "zimage", "training_info": json.dumps({"step": 1000, "epoch": 3})}
    add_file("zi_aitoolkit_bf16.safetensors", "ai-toolkit", [make_lora(x, 4, "BF16", "ai-toolkit") for x in c],
             fmt="ai-toolkit", qkv="split", metadata=meta, dtype="BF16")

    # (3) kohya / musubi: lora_unet_<underscored>, alpha 2 != rank 4 (0-dim tensor)
    c = (blk("layers.0", ATT + FF) + blk("noise_refiner.1", ATT + ["adaLN_modulation.0"]) + TOP5)
    meta = {"ss_network_module": "networks.lora_zimage", "ss_network_dim": "4", "ss_network_alpha": "2.0",
            "ss_base_model_version": "z_image", "modelspec.architecture": "Z-Image/lora",
            "modelspec.sai_model_spec": "1.0.0"}
    add_file("zi_kohya.safetensors", "kohya", [make_lora(x, 4, "F32", "kohya", alpha=2.0) for x in c],
             fmt="kohya", qkv="split", metadata=meta)

    # (3b) kohya fp16, rank 2 alpha 1
    c = blk("context_refiner.0", ATT + ["feed_forward.w3"])
    add_file("zi_kohya_fp16.safetensors", "kohya", [make_lora(x, 2, "F16", "kohya", alpha=1.0) for x in c],
             fmt="kohya", qkv="split", dtype="F16")

    # (4) ComfyUI native fused: diffusion_model.layers.N.attention.qkv (down cat [3r,in], up block-diag)
    mods = []
    for b in ("layers.0", "context_refiner.0"):
        mods.append(make_lora(b + ".attention.qkv", 2, "F32", "comfy"))
        mods.append(make_lora(b + ".attention.to_out.0", 6, "F32", "comfy"))
    mods.append(make_lora("layers.0.feed_forward.w1", 6, "F32", "comfy"))
    add_file("zi_comfy_fused.safetensors", "comfy", mods, fmt="ai-toolkit", qkv="fused")

    # (5) musubi -> ComfyUI converter: kohya fused qkv, alpha x3 (per-projection rank 2 alpha 1)
    mods = []
    for b in ("layers.0", "noise_refiner.1"):
        mods.append(make_lora(b + ".attention.qkv", 2, "F32", "kohya-comfy", alpha=3.0))
        mods.append(make_lora(b + ".attention.to_out.0", 6, "F32", "kohya-comfy", alpha=3.0))
    mods.append(make_lora("layers.0.feed_forward.w2", 6, "F32", "kohya-comfy", alpha=3.0))
    add_file("zi_musubi_comfy.safetensors", "kohya-comfy", mods, fmt="kohya", qkv="fused")

    # (6) DiffSynth raw: bare X.lora_A.default.weight
    c = blk("layers.0", ATT + ["feed_forward.w1", "feed_forward.w3"]) + blk("noise_refiner.1", ATT)
    add_file("zi_diffsynth.safetensors", "diffsynth", [make_lora(x, 3, "F32", "diffsynth") for x in c],
             fmt="diffsynth", qkv="split")

    # (7) bare X.lora_A.weight, fp16
    c = blk("layers.29", ATT) + ["t_embedder.mlp.0", "cap_embedder.1"]
    add_file("zi_bare_fp16.safetensors", "bare", [make_lora(x, 2, "F16", "bare") for x in c],
             fmt="bare", qkv="split", dtype="F16")

    # (8) PEFT base_model.model.X (counts as diffusers)
    c = blk("layers.0", ATT + ["adaLN_modulation.0"])
    add_file("zi_peft.safetensors", "peft", [make_lora(x, 4, "F32", "peft", seed="peft") for x in c],
             fmt="diffusers", qkv="split")

    # (9) LoHa, kohya prefix, alpha 2 rank 4
    c = blk("layers.0", ATT + ["feed_forward.w2", "adaLN_modulation.0"])
    add_file("zi_loha.safetensors", "kohya", [make_loha(x, 4, "F32", 2.0) for x in c],
             fmt="kohya", qkv="split")

    # (10) LoKr full factors (ai-toolkit style), alpha 9999999999 that must be ignored, bf16
    mods = [make_lokr(x, "BF16", (8, 8), 9999999999.0) for x in blk("layers.0", ATT)]
    mods.append(make_lokr("layers.0.feed_forward.w1", "BF16", (16, 8), 9999999999.0))
    mods.append(make_lokr("layers.0.adaLN_modulation.0", "BF16", (16, 4), 9999999999.0))
    add_file("zi_lokr_full.safetensors", "ai-toolkit", mods, fmt="ai-toolkit", qkv="split", dtype="BF16")
    # full-rank factors: kron(w1, w2) of q/k/v has rank 8·480 = 3840 (= dim); no exact compact LoRA
    # exists, so fusing into qkv must be refused unless lossy
    FILES["zi_lokr_full.safetensors"]["exp"]["lokr_comfyui"] = "refuse"

    # (11) LoKr factored, lycoris_<underscored> (SimpleTuner), alpha 2 dim 4
    mods = [make_lokr(x, "F32", (8, 8), 2.0, w2_rank=4) for x in blk("layers.0", ATT)]
    mods.append(make_lokr("layers.0.feed_forward.w2", "F32", (8, 16), 2.0, w2_rank=4))
    mods.append(make_lokr("layers.29.feed_forward.w3", "F32", (16, 8), 2.0, w1_rank=4))
    mods.append(make_lokr("noise_refiner.1.adaLN_modulation.0", "F32", (16, 4), 2.0, w2_rank=4))
    add_file("zi_lokr_factored.safetensors", "lycoris", mods, fmt="lycoris", qkv="split")
    # kron(w1 [8,8], w2a@w2b rank 4) = kron(w1, w2a) @ kron(I8, w2b): an exact LoRA of rank 32, so a
    # converter may fuse q/k/v exactly (then the result must be exact) or refuse
    FILES["zi_lokr_factored.safetensors"]["exp"]["lokr_comfyui"] = "exact-or-refuse"

    # (12) DoRA, kohya (.dora_scale [out,1] per row; [1,in] per column)
    mods = [make_lora(x, 4, "F32", "kohya", alpha=4.0, dora=(".dora_scale", "row")) for x in blk("layers.0", ATT)]
    mods.append(make_lora("layers.0.feed_forward.w2", 4, "F32", "kohya", alpha=4.0, dora=(".dora_scale", "col")))
    mods.append(make_lora("all_x_embedder.2-1", 4, "F32", "kohya", alpha=4.0, dora=(".dora_scale", "row")))
    mods.append(make_lora("all_final_layer.2-1.linear", 4, "F32", "kohya", alpha=4.0, dora=(".dora_scale", "col")))
    add_file("zi_dora_kohya.safetensors", "kohya", mods, fmt="kohya", qkv="split")

    # (13) DoRA, ai-toolkit (.magnitude [out]), bf16
    mods = [make_lora(x, 4, "BF16", "ai-toolkit", dora=(".magnitude", "vec"), seed="dora")
            for x in blk("layers.29", ATT) + ["all_x_embedder.2-1"]]
    add_file("zi_dora_aitoolkit_bf16.safetensors", "ai-toolkit", mods, fmt="ai-toolkit", qkv="split",
             dtype="BF16")

    # (14) full diffs (ai-toolkit full_if_contains) mixed with LoRA, bf16
    mods = [make_lora(x, 4, "BF16", "ai-toolkit", seed="diff") for x in blk("layers.0", ATT[:3])]
    mods.append(make_diff("layers.0.adaLN_modulation.0", "BF16", bias=True))
    mods.append(make_diff("layers.0.attention_norm1", "BF16"))
    mods.append(make_diff("t_embedder.mlp.0", "BF16", bias=True))
    add_file("zi_diff_bf16.safetensors", "ai-toolkit", mods, fmt="ai-toolkit", qkv="split", dtype="BF16")


# ----------------------------------------------------------------------------------------------------
# foreign families


def foreign(name, family, fmt, spec, r=2, alpha=None, dt="F32", diffs=()):
    """spec: list of (key, out, in[, conv]); LoRA suffixes from fmt."""
    style = {"kohya": "kohya", "diffusers": "diffusers", "ai-toolkit": "ai-toolkit"}[fmt]
    dn, up = LORA_SUFFIX[style]
    mods = []
    for item in spec:
        key, out, inn = item[:3]
        conv = len(item) > 3
        g = rng_for("foreign", name, key)
        m = Module(None, "lora", out, inn)
        s = sigma_for((alpha / r) if alpha else 1.0, r)
        d = g.standard_normal((r, inn)) * s
        u = g.standard_normal((out, r)) * s
        if conv:  # 1x1 conv (SD1.5 proj_in/proj_out)
            d, u = d.reshape(r, inn, 1, 1), u.reshape(out, r, 1, 1)
        m.parts[key + dn] = store(d, dt)
        m.parts[key + up] = store(u, dt)
        if alpha is not None:
            m.parts[key + ".alpha"] = store(np.array(alpha, dtype=np.float32).reshape(()), dt)
            m.alpha = float(m.parts[key + ".alpha"][1])
        m.rank = r
        mods.append(m)
    for key, out in diffs:
        m = Module(None, "diff", out, 0)
        m.parts[key + ".diff"] = store(rng_for("foreign", name, key).standard_normal(out) * 1e-2, dt)
        mods.append(m)
    tensors = {}
    for m in mods:
        for k, (st, _) in m.parts.items():
            tensors[k] = st
    adapters = {}
    for m in mods:
        adapters[m.kind] = adapters.get(m.kind, 0) + 1
    FILES[name] = {"exp": {"family": family, "format": fmt, "qkv": "none", "adapters": adapters,
                           "rank": r, "ranks": sorted({m.rank for m in mods}), "alpha": alpha,
                           "modules": len(mods), "nkeys": len(tensors), "dtype": dt,
                           "precision": "fp32" if dt == "F32" else dt.lower(), "dora": 0, "broken": False},
                   "mods": mods, "tensors": tensors, "metadata": None, "style": "raw", "probes": False}


def foreign_files():
    sd = "lora_unet_down_blocks_0_attentions_0_"
    foreign("sd15_kohya.safetensors", "sd1", "kohya", [
        (sd + "transformer_blocks_0_attn1_to_q", 320, 320),
        (sd + "transformer_blocks_0_attn1_to_k", 320, 320),
        (sd + "transformer_blocks_0_attn2_to_k", 320, 768),
        (sd + "transformer_blocks_0_ff_net_0_proj", 2560, 320),
        (sd + "proj_in", 320, 320, "conv"),
        ("lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_v", 1280, 768),
        ("lora_te_text_model_encoder_layers_0_self_attn_q_proj", 768, 768),
        ("lora_te_text_model_encoder_layers_0_mlp_fc1", 3072, 768),
    ], r=4, alpha=1.0, dt="F16")
    foreign("sdxl_kohya.safetensors", "sdxl", "kohya", [
        ("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q", 640, 640),
        ("lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k", 640, 2048),
        ("lora_unet_middle_block_1_transformer_blocks_0_attn2_to_k", 1280, 2048),
        ("lora_unet_output_blocks_0_1_transformer_blocks_0_ff_net_2", 1280, 5120),
        ("lora_te1_text_model_encoder_layers_0_self_attn_q_proj", 768, 768),
        ("lora_te2_text_model_encoder_layers_0_self_attn_q_proj", 1280, 1280),
    ], r=4, alpha=2.0)
    foreign("flux1_kohya.safetensors", "flux1", "kohya", [
        ("lora_unet_double_blocks_0_img_attn_qkv", 9216, 3072),
        ("lora_unet_double_blocks_0_img_attn_proj", 3072, 3072),
        ("lora_unet_double_blocks_0_img_mlp_0", 12288, 3072),
        ("lora_unet_double_blocks_0_txt_mod_lin", 18432, 3072),
        ("lora_unet_single_blocks_0_linear1", 21504, 3072),
        ("lora_unet_single_blocks_0_linear2", 3072, 15360),
    ], r=2, alpha=2.0, dt="BF16")
    foreign("flux1_diffusers.safetensors", "flux1", "diffusers", [
        ("transformer.transformer_blocks.0.attn.to_q", 3072, 3072),
        ("transformer.transformer_blocks.0.attn.add_q_proj", 3072, 3072),
        ("transformer.transformer_blocks.0.ff.net.0.proj", 12288, 3072),
        ("transformer.single_transformer_blocks.0.attn.to_q", 3072, 3072),
        ("transformer.single_transformer_blocks.0.proj_mlp", 12288, 3072),
    ], r=2)
    foreign("lumina2_aitoolkit.safetensors", "lumina2", "ai-toolkit", [
        ("diffusion_model.layers.0.attention.qkv", 2304 + 768 + 768, 2304),
        ("diffusion_model.layers.0.attention.out", 2304, 2304),
        ("diffusion_model.layers.0.feed_forward.w1", 6144, 2304),
        ("diffusion_model.layers.0.feed_forward.w2", 2304, 6144),
        ("diffusion_model.layers.0.adaLN_modulation.1", 4 * 2304, 1024),
    ], r=4, dt="BF16")
    foreign("qwen_image_diffusers.safetensors", "qwen-image", "diffusers", [
        ("transformer.transformer_blocks.0.attn.to_q", 3072, 3072),
        ("transformer.transformer_blocks.0.attn.add_q_proj", 3072, 3072),
        ("transformer.transformer_blocks.0.attn.to_add_out", 3072, 3072),
        ("transformer.transformer_blocks.0.img_mlp.net.0.proj", 12288, 3072),
        ("transformer.transformer_blocks.0.txt_mlp.net.2", 3072, 12288),
        ("transformer.transformer_blocks.0.img_mod.1", 18432, 3072),
    ], r=2, dt="BF16")
    foreign("wan_aitoolkit.safetensors", "wan", "ai-toolkit", [
        ("diffusion_model.blocks.0.self_attn.q", 1536, 1536),
        ("diffusion_model.blocks.0.self_attn.o", 1536, 1536),
        ("diffusion_model.blocks.0.cross_attn.k", 1536, 1536),
        ("diffusion_model.blocks.0.ffn.0", 8960, 1536),
        ("diffusion_model.blocks.0.ffn.2", 1536, 8960),
    ], r=4, diffs=[("diffusion_model.blocks.0.norm3", 1536)], dt="BF16")


# ----------------------------------------------------------------------------------------------------
# broken files


def broken_files(outdir):
    def f32(a):
        return store(np.asarray(a, dtype=np.float32), "F32")[0]

    g = rng_for("broken")
    A = lambda r, i: f32(g.standard_normal((r, i)) * 0.05)  # noqa: E731
    B = lambda o, r: f32(g.standard_normal((o, r)) * 0.05)  # noqa: E731
    good = {"transformer.layers.0.attention.to_q.lora_A.weight": A(4, DIM),
            "transformer.layers.0.attention.to_q.lora_B.weight": B(DIM, 4)}
    cases = {
        "broken_missing_b.safetensors": dict(good, **{"transformer.layers.0.attention.to_k.lora_A.weight": A(4, DIM)}),
        "broken_rank_mismatch.safetensors": dict(good, **{
            "transformer.layers.0.attention.to_k.lora_A.weight": A(4, DIM),
            "transformer.layers.0.attention.to_k.lora_B.weight": B(DIM, 3)}),
    }
    kg = {"lora_unet_layers_0_attention_to_q.lora_down.weight": A(4, DIM),
          "lora_unet_layers_0_attention_to_q.lora_up.weight": B(DIM, 4)}
    for tag, val in (("nan", np.nan), ("inf", np.inf)):
        cases["broken_%s_alpha.safetensors" % tag] = dict(kg, **{
            "lora_unet_layers_0_attention_to_q.alpha": f32(np.array(val, dtype=np.float32).reshape(()))})
    cases["broken_alpha_only.safetensors"] = {
        "lora_unet_layers_0_attention_to_q.alpha": f32(np.array(4.0, dtype=np.float32).reshape(())),
        "lora_unet_layers_0_attention_to_k.alpha": f32(np.array(4.0, dtype=np.float32).reshape(()))}
    why = {"broken_missing_b.safetensors": "layers.0.attention.to_k has lora_A but no lora_B",
           "broken_rank_mismatch.safetensors": "layers.0.attention.to_k: lora_A rank 4, lora_B rank 3",
           "broken_nan_alpha.safetensors": "alpha is NaN", "broken_inf_alpha.safetensors": "alpha is inf",
           "broken_alpha_only.safetensors": "only .alpha tensors, no adapter weights"}
    for name, t in cases.items():
        write_safetensors(os.path.join(outdir, name), t, {"format": "pt"})
        FILES[name] = {"exp": {"broken": True, "why": why[name]}, "written": True}
    # truncated copy of a valid file (its header is intact; the data area is cut)
    with open(os.path.join(outdir, "zi_kohya.safetensors"), "rb") as f:
        data = f.read()
    with open(os.path.join(outdir, "broken_truncated.safetensors"), "wb") as f:
        f.write(data[: len(data) // 2])
    FILES["broken_truncated.safetensors"] = {"exp": {"broken": True, "why": "first half of zi_kohya.safetensors"},
                                             "written": True}


# ----------------------------------------------------------------------------------------------------
# probes


def dora_weight(m, W, s):
    """Spec §2: W' = (W+ΔW)·m/‖W+ΔW‖ (row norm when the magnitude has `out` entries, else column);
    result W + s·(W' − W)."""
    dW = dense_module(m)
    mag = m.v(m.dora_suffix)
    Wc = W + dW
    if mag.shape[0] == W.shape[0] and mag.size == W.shape[0]:
        Wp = Wc * (mag.reshape(-1, 1) / np.linalg.norm(Wc, axis=1, keepdims=True))
    else:
        Wp = Wc * (mag.reshape(1, -1) / np.linalg.norm(Wc, axis=0, keepdims=True))
    return W + s * (Wp - W)


def lora_rank1(m, x):
    """Best rank-1 approximation of ΔW = s·up@down (exact SVD via QR of both factors) applied to x, and
    the energy it keeps (σ1² / Σσ²)."""
    qu, ru = np.linalg.qr(m.v(m.up_s))
    qv, rv = np.linalg.qr(m.v(m.down_s).T)
    a, sig, bt = np.linalg.svd(ru @ rv.T)
    u1, v1 = qu @ a[:, 0], qv @ bt[0]
    y = m.scale * sig[0] * np.outer(u1, v1 @ x)
    return y, float(sig[0] ** 2 / np.sum(sig ** 2))


def write_probes(outdir, name, f):
    t = {}
    energies = []
    stem = name[: -len(".safetensors")]
    for m in f["mods"]:
        c = m.target
        if m.dora:
            if m.inn > 64 and m.out > 64:
                continue   # base weights only for the small modules
            W = rng_for("base", c).standard_normal((m.out, m.inn)) * 0.02
            W = store(W, "F32")[1]
            x = probe_x(c, m.inn)
            t[c + ".base"] = store(W, "F32")[0]
            t[c + ".x"] = store(x, "F32")[0]
            for s, tag in ((1.0, ".y1"), (0.5, ".y05")):
                t[c + tag] = store(dora_weight(m, W, s) @ x.astype(np.float64), "F32")[0]
            continue
        if m.inn == 0:
            t[c + ".y"] = store(m.v(".diff").reshape(-1, 1), "F32")[0]
            continue
        x = probe_x(c, m.inn)
        y = apply_module(m, x.astype(np.float64))
        assert c + ".x" not in t, c
        t[c + ".x"] = store(x, "F32")[0]
        t[c + ".y"] = store(y, "F32")[0]
        if f["exp"].get("resize1") is not None and m.kind == "lora":
            y1, e = lora_rank1(m, x.astype(np.float64))
            t[c + ".y_r1"] = store(y1, "F32")[0]
            energies.append(e)
        if m.kind == "diff" and ".diff_b" in m.parts:
            t[c + ".b"] = store(m.v(".diff_b").reshape(-1, 1), "F32")[0]
    if energies:
        f["exp"]["resize1"] = {"energy_min": min(energies), "energy_mean": float(np.mean(energies))}
    pname = stem + ".probes.safetensors"
    write_safetensors(os.path.join(outdir, pname), t, {"source": name})
    return pname


def selfcheck():
    """Second numpy path: recompute every probe through the dense ΔW and compare."""
    worst = 0.0
    for name, f in FILES.items():
        if not f.get("probes"):
            continue
        for m in f["mods"]:
            if m.dora or m.inn == 0:
                continue
            x = probe_x(m.target, m.inn).astype(np.float64)
            y1 = apply_module(m, x)
            y2 = dense_module(m) @ x
            err = np.linalg.norm(y1 - y2) / np.linalg.norm(y2)
            worst = max(worst, err)
            if err > 1e-10:
                raise SystemExit("selfcheck: %s %s: relative error %g" % (name, m.target, err))
            # scale sanity: entries of ΔW should be O(1e-2)
            d = dense_module(m)
            sd = float(np.std(d))
            if not (1e-3 < sd < 1e-1):
                raise SystemExit("selfcheck: %s %s: ΔW std %g not O(1e-2)" % (name, m.target, sd))
            # independent scalar recomputation of one output entry
            i = int(rng_for("pick", m.target).integers(m.out))
            if m.kind == "lora":
                row = m.scale * sum(m.v(m.up_s)[i, k] * m.v(m.down_s)[k] for k in range(m.rank))
            elif m.kind == "loha":
                w = [m.v(s) for s in (".hada_w1_a", ".hada_w1_b", ".hada_w2_a", ".hada_w2_b")]
                row = m.scale * (w[0][i] @ w[1]) * (w[2][i] @ w[3])
            elif m.kind == "lokr":
                A, B = lokr_factors(m)
                c_ = B.shape[0]
                row = m.scale * np.concatenate([A[i // c_, j] * B[i % c_] for j in range(A.shape[1])])
            else:
                row = m.v(".diff")[i]
            e2 = np.linalg.norm(row @ x - y1[i]) / max(np.linalg.norm(y1[i]), 1e-30)
            if e2 > 1e-9:
                raise SystemExit("selfcheck: %s %s row %d: relative error %g" % (name, m.target, i, e2))
        # fused LoRA: the per-projection blocks of a block-diagonal up are the q/k/v deltas
        for m in f["mods"]:
            if m.fused and m.kind == "lora":
                up, dn = m.v(m.up_s), m.v(m.down_s)
                r = m.rank // 3
                for p in range(3):
                    assert not np.any(up[p * DIM:(p + 1) * DIM, :p * r]) and not np.any(up[p * DIM:(p + 1) * DIM, (p + 1) * r:])
    # rank-1 reference against a dense SVD
    for m in FILES["zi_diffusers.safetensors"]["mods"][:2]:
        x = probe_x(m.target, m.inn).astype(np.float64)
        y1, e = lora_rank1(m, x)
        U, S, Vt = np.linalg.svd(dense_lora(m), full_matrices=False)
        y2 = S[0] * np.outer(U[:, 0], Vt[0] @ x)
        assert np.linalg.norm(y1 - y2) / np.linalg.norm(y2) < 1e-9 and abs(e - S[0] ** 2 / np.sum(S ** 2)) < 1e-9
    # bf16 rounding: exact halfway cases round to even
    b = f32_to_bf16_bits(np.array([1.0, 1.00390625, 1.01171875, -3.0], dtype=np.float32))
    assert list(b) == [0x3F80, 0x3F80, 0x3F82, 0xC040], [hex(v) for v in b]
    print("selfcheck: ok (worst relative error %.2e)" % worst)


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if len(args) != 1:
        sys.stderr.write("usage: python3 tests/ref/lora_ref.py OUTDIR [--selfcheck]\n")
        return 2
    outdir = args[0]
    os.makedirs(outdir, exist_ok=True)
    zimage_files()
    foreign_files()
    for name, f in FILES.items():
        write_safetensors(os.path.join(outdir, name), f["tensors"], f["metadata"])
        if f["probes"]:
            f["exp"]["probes"] = write_probes(outdir, name, f)
    broken_files(outdir)
    expected = {name: f["exp"] for name, f in sorted(FILES.items())}
    tmp = os.path.join(outdir, "expected.json.tmp")
    with open(tmp, "w") as fh:
        json.dump(expected, fh, indent=1, sort_keys=True, allow_nan=False)
    os.replace(tmp, os.path.join(outdir, "expected.json"))  # written last: marks a complete set
    if "--selfcheck" in sys.argv:
        selfcheck()
    return 0


if __name__ == "__main__":
    sys.exit(main())
