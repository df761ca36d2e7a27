#!/usr/bin/env python3
"""vae_ref.py — an independent float32 PyTorch reference of the FLUX.1 autoencoder (AutoencoderKL) used by
Z-Image, written from ../shared/spec/zimage.md §5, plus the tiny models and golden files the C tests
(tests/test_vae.c) compare against.

Usage:
  /usr/bin/python3 tests/ref/vae_ref.py --out tests/data/vae                 # regenerate everything
  /usr/bin/python3 tests/ref/vae_ref.py --out tests/data/vae --weights-only
        # numpy only (no torch): rewrite just the weight files (they are git-ignored) and check them
        # against the committed weights.sha256; about a second.

Everything is deterministic: random values come from a counter-based splitmix64 generator keyed by a
string (no numpy/torch RNG, no transcendental functions), so the weight files are byte-identical on
every machine. See tests/data/vae/README.md for the file list.

The model (batch 1, tensors [C, H, W]; GroupNorm eps 1e-6; SiLU everywhere an activation is needed):
  ResBlock(x): h = conv3x3(SiLU(GN(x))); h = conv3x3(SiLU(GN(h))); return shortcut(x) + h, where the
               shortcut is a 1x1 conv when the channel count changes (else identity).
  Attention(x): single head over the H*W tokens: h = GN(x) as tokens [HW, C]; q, k, v, out Linear [C, C];
               x + out(softmax(q k^T / sqrt(C)) v) back to [C, H, W].
  Encoder: conv_in (3x3) -> per level i: layers x ResBlock (channels ch[i]); levels 0..L-2 end with a
           downsample: pad right and bottom by one zero, conv3x3 stride 2 padding 0 -> mid: Res, Attn,
           Res -> GN, SiLU, conv_out -> [2*latent] (mean | logvar); (SD-style VAEs: quant_conv 1x1) ->
           the mean is the first `latent` channels.
  Decoder: (SD-style: post_quant_conv 1x1) conv_in -> mid: Res, Attn, Res -> per up block k (channels
           ch[L-1-k]): (layers+1) x ResBlock; blocks 0..L-2 end with nearest x2 upsampling then conv3x3
           -> GN, SiLU, conv_out.
Spatial factor 2^(L-1).

Names: diffusers (encoder.down_blocks.{i}.resnets.{j}..., mid_block.attentions.0.to_q ...) and BFL/ComfyUI
ae.safetensors (encoder.down.{i}.block.{j}..., mid.attn_1.q as a [C,C,1,1] conv, decoder.up.{L-1-k} for
up_blocks[k]), and the legacy diffusers attention names (query, key, value, proj_attn).
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
    # 2 levels (factor 2), 1 ResBlock per encoder level (2 per decoder block), GroupNorm(8)
    "tiny_a": dict(ch=[32, 64], layers=1, groups=8, latent=16, quant=False, scaling=0.3611, shift=0.1159),
    # 3 levels (factor 4), 2 ResBlocks per encoder level (3 per decoder block), GroupNorm(32) as FLUX;
    # level 0 -> 1 keeps 32 channels (no shortcut), level 1 -> 2 widens to 64 (1x1 shortcut)
    "tiny_b": dict(ch=[32, 32, 64], layers=2, groups=32, latent=16, quant=False, scaling=0.3611, shift=0.1159),
    # Stable-Diffusion-style: 4 latent channels, quant_conv / post_quant_conv, legacy attention names
    "tiny_c": dict(ch=[32, 64], layers=1, groups=16, latent=4, quant=True, scaling=0.18215, shift=None),
}

# (encode image H, W) and (decode latent h, w) per config and case
CASES = {
    "tiny_a": {"case0": ((12, 20), (6, 10)), "case1": ((8, 8), (5, 7))},
    "tiny_b": {"case0": ((16, 24), (4, 6)), "case1": ((8, 4), (3, 5))},
    "tiny_c": {"case0": ((12, 8), (4, 6))},
}
EPS = 1e-6


def factor(c):
    return 2 ** (len(c["ch"]) - 1)


# ----------------------------------------------------------------------------------------------------
# deterministic random numbers: tests/ref/keyrng.py
from keyrng import _fnv1a, _u64, randn, uniform  # noqa: E402,F401


# ----------------------------------------------------------------------------------------------------
# module list (diffusers names) and weights


def resnet_shapes(p, cin, cout):
    s = {p + ".norm1.weight": [cin], p + ".norm1.bias": [cin],
         p + ".conv1.weight": [cout, cin, 3, 3], p + ".conv1.bias": [cout],
         p + ".norm2.weight": [cout], p + ".norm2.bias": [cout],
         p + ".conv2.weight": [cout, cout, 3, 3], p + ".conv2.bias": [cout]}
    if cin != cout:
        s[p + ".conv_shortcut.weight"] = [cout, cin, 1, 1]
        s[p + ".conv_shortcut.bias"] = [cout]
    return s


def attn_shapes(p, C):
    s = {p + ".group_norm.weight": [C], p + ".group_norm.bias": [C]}
    for n in ("to_q", "to_k", "to_v", "to_out.0"):
        s[p + "." + n + ".weight"] = [C, C]
        s[p + "." + n + ".bias"] = [C]
    return s


def shapes(c):
    ch, L, lay, lat = c["ch"], len(c["ch"]), c["layers"], c["latent"]
    s = {"encoder.conv_in.weight": [ch[0], 3, 3, 3], "encoder.conv_in.bias": [ch[0]]}
    cin = ch[0]
    for i in range(L):
        for j in range(lay):
            s.update(resnet_shapes("encoder.down_blocks.%d.resnets.%d" % (i, j), cin, ch[i]))
            cin = ch[i]
        if i < L - 1:
            s["encoder.down_blocks.%d.downsamplers.0.conv.weight" % i] = [ch[i], ch[i], 3, 3]
            s["encoder.down_blocks.%d.downsamplers.0.conv.bias" % i] = [ch[i]]
    C = ch[-1]
    for side in ("encoder", "decoder"):
        s.update(resnet_shapes(side + ".mid_block.resnets.0", C, C))
        s.update(resnet_shapes(side + ".mid_block.resnets.1", C, C))
        s.update(attn_shapes(side + ".mid_block.attentions.0", C))
    s.update({"encoder.conv_norm_out.weight": [C], "encoder.conv_norm_out.bias": [C],
              "encoder.conv_out.weight": [2 * lat, C, 3, 3], "encoder.conv_out.bias": [2 * lat],
              "decoder.conv_in.weight": [C, lat, 3, 3], "decoder.conv_in.bias": [C]})
    rev = list(reversed(ch))
    cin = C
    for k in range(L):
        for j in range(lay + 1):
            s.update(resnet_shapes("decoder.up_blocks.%d.resnets.%d" % (k, j), cin, rev[k]))
            cin = rev[k]
        if k < L - 1:
            s["decoder.up_blocks.%d.upsamplers.0.conv.weight" % k] = [rev[k], rev[k], 3, 3]
            s["decoder.up_blocks.%d.upsamplers.0.conv.bias" % k] = [rev[k]]
    s.update({"decoder.conv_norm_out.weight": [ch[0]], "decoder.conv_norm_out.bias": [ch[0]],
              "decoder.conv_out.weight": [3, ch[0], 3, 3], "decoder.conv_out.bias": [3]})
    if c["quant"]:
        s.update({"quant_conv.weight": [2 * lat, 2 * lat, 1, 1], "quant_conv.bias": [2 * lat],
                  "post_quant_conv.weight": [lat, lat, 1, 1], "post_quant_conv.bias": [lat]})
    return s


def gen_weights(c):
    W = {}
    for n, shp in sorted(shapes(c).items()):
        key = "vae/%s/%s" % (c["name"], n)
        if n.endswith(".weight") and len(shp) == 1:          # GroupNorm scale
            W[n] = randn(key, shp, 0.1, 1.0)
        elif n.endswith(".bias"):
            W[n] = randn(key, shp, 0.1)
        else:                                                  # conv [o,i,k,k] or linear [o,i]
            fan_in = int(np.prod(shp[1:]))
            gain = 1.0
            if ".to_q." in n or ".to_k." in n:
                gain = 2.0                                     # sharper attention: it must matter
            if n.endswith("conv2.weight"):
                gain = 0.7
            W[n] = randn(key, shp, gain / math.sqrt(fan_in))
    return W


# ----------------------------------------------------------------------------------------------------
# name mappings


def to_bfl(W, L, prefix=""):
    """diffusers names -> BFL/ComfyUI ae.safetensors names (attention linears as [C,C,1,1] convs)."""
    out = {}
    for n, v in W.items():
        m = n
        parts = n.split(".")
        if parts[0] == "encoder" and parts[1] == "down_blocks":
            i = parts[2]
            if parts[3] == "resnets":
                m = "encoder.down.%s.block.%s.%s" % (i, parts[4], ".".join(parts[5:]))
            else:  # downsamplers.0.conv.*
                m = "encoder.down.%s.downsample.%s" % (i, ".".join(parts[5:]))
        elif parts[0] == "decoder" and parts[1] == "up_blocks":
            i = L - 1 - int(parts[2])
            if parts[3] == "resnets":
                m = "decoder.up.%d.block.%s.%s" % (i, parts[4], ".".join(parts[5:]))
            else:
                m = "decoder.up.%d.upsample.%s" % (i, ".".join(parts[5:]))
        elif parts[1] == "mid_block":
            if parts[2] == "resnets":
                m = "%s.mid.block_%d.%s" % (parts[0], int(parts[3]) + 1, ".".join(parts[4:]))
            else:
                rest = ".".join(parts[4:])
                rest = (rest.replace("group_norm.", "norm.").replace("to_q.", "q.").replace("to_k.", "k.")
                        .replace("to_v.", "v.").replace("to_out.0.", "proj_out."))
                m = "%s.mid.attn_1.%s" % (parts[0], rest)
                if v.ndim == 2:
                    v = v.reshape(v.shape[0], v.shape[1], 1, 1)
        elif parts[1] == "conv_norm_out":
            m = "%s.norm_out.%s" % (parts[0], parts[2])
        m = m.replace(".conv_shortcut.", ".nin_shortcut.")
        out[prefix + m] = v
    return out


def from_bfl(B, L, prefix=""):
    """The inverse mapping, written separately (a self-check of to_bfl)."""
    out = {}
    for n, v in B.items():
        assert n.startswith(prefix)
        n = n[len(prefix):]
        p = n.split(".")
        if p[0] == "encoder" and p[1] == "down":
            if p[3] == "block":
                m = "encoder.down_blocks.%s.resnets.%s.%s" % (p[2], p[4], ".".join(p[5:]))
            else:
                m = "encoder.down_blocks.%s.downsamplers.0.%s" % (p[2], ".".join(p[4:]))
        elif p[0] == "decoder" and p[1] == "up":
            k = L - 1 - int(p[2])
            if p[3] == "block":
                m = "decoder.up_blocks.%d.resnets.%s.%s" % (k, p[4], ".".join(p[5:]))
            else:
                m = "decoder.up_blocks.%d.upsamplers.0.%s" % (k, ".".join(p[4:]))
        elif p[1] == "mid" and p[2].startswith("block_"):
            m = "%s.mid_block.resnets.%d.%s" % (p[0], int(p[2][6:]) - 1, ".".join(p[3:]))
        elif p[1] == "mid" and p[2] == "attn_1":
            names = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
            m = "%s.mid_block.attentions.0.%s.%s" % (p[0], names[p[3]], p[4])
            if v.ndim == 4:
                v = v.reshape(v.shape[0], v.shape[1])
        elif p[1] == "norm_out":
            m = "%s.conv_norm_out.%s" % (p[0], p[2])
        else:
            m = n
        out[m.replace(".nin_shortcut.", ".conv_shortcut.")] = v
    return out


def to_legacy(W):
    """Legacy diffusers attention names (before diffusers 0.14): query/key/value/proj_attn, group_norm."""
    rep = {".to_q.": ".query.", ".to_k.": ".key.", ".to_v.": ".value.", ".to_out.0.": ".proj_attn."}
    out = {}
    for n, v in W.items():
        for a, b in rep.items():
            n = n.replace(a, b)
        out[n] = v
    return out


def diffusers_config(c):
    L = len(c["ch"])
    return {
        "_class_name": "AutoencoderKL",
        "_diffusers_version": "0.36.0.dev0",
        "act_fn": "silu",
        "block_out_channels": list(c["ch"]),
        "down_block_types": ["DownEncoderBlock2D"] * L,
        "force_upcast": True,
        "in_channels": 3,
        "latent_channels": c["latent"],
        "latents_mean": None,
        "latents_std": None,
        "layers_per_block": c["layers"],
        "mid_block_add_attention": True,
        "norm_num_groups": c["groups"],
        "out_channels": 3,
        "sample_size": 64,
        "scaling_factor": c["scaling"],
        "shift_factor": c["shift"],
        "up_block_types": ["UpDecoderBlock2D"] * L,
        "use_post_quant_conv": c["quant"],
        "use_quant_conv": c["quant"],
    }


# ----------------------------------------------------------------------------------------------------
# the weight files


def weight_files(name):
    files = ["diffusers/vae/diffusion_pytorch_model.safetensors", "ae.safetensors"]
    if name == "tiny_a":
        files += ["ae_bf16_prefixed.safetensors", "diffusers_f16.safetensors"]
    return files


def write_layouts(c, W, cdir):
    L = len(c["ch"])
    vdir = os.path.join(cdir, "diffusers", "vae")
    os.makedirs(vdir, exist_ok=True)
    with open(os.path.join(vdir, "config.json"), "w") as fh:
        json.dump(diffusers_config(c), fh, indent=2, sort_keys=True)
        fh.write("\n")
    Wd = to_legacy(W) if c["name"] == "tiny_c" else W
    st.write(os.path.join(vdir, "diffusion_pytorch_model.safetensors"), {n: (v, "F32") for n, v in Wd.items()},
             {"format": "pt"})
    # BFL single file: GroupNorm's group count is not in the shapes; a zlora metadata key carries it
    # where it is not FLUX's 32 (tiny_b relies on the default)
    meta = {"norm_num_groups": str(c["groups"])} if c["groups"] != 32 else None
    st.write(os.path.join(cdir, "ae.safetensors"), {n: (v, "F32") for n, v in to_bfl(W, L).items()}, meta)
    if c["name"] == "tiny_a":
        st.write(os.path.join(cdir, "ae_bf16_prefixed.safetensors"),
                 {n: (v, "BF16") for n, v in to_bfl(W, L, "first_stage_model.").items()}, meta)
        st.write(os.path.join(cdir, "diffusers_f16.safetensors"), {n: (v, "F16") for n, v in W.items()}, meta)


def gen_inputs(c, case):
    (H, Wd), (h, w) = CASES[c["name"]][case]
    key = "vae/input/%s/%s/" % (c["name"], case)
    img = (uniform(key + "image", (3, H, Wd)) * 2.0 - 1.0).astype(np.float32)
    # a smooth component too, as real images have
    yy, xx = np.meshgrid(np.linspace(-1, 1, H), np.linspace(-1, 1, Wd), indexing="ij")
    img = (0.5 * img + 0.4 * np.stack([xx, yy, xx * yy])).astype(np.float32)
    lat = randn(key + "latent", (c["latent"], h, w))
    return img, lat


# ----------------------------------------------------------------------------------------------------
# the reference forward (torch), diffusers names


def _import_torch():
    global torch, F
    import torch  # noqa: F401
    import torch.nn.functional as F  # noqa: F401
    torch.set_num_threads(max(1, os.cpu_count() or 1))


def T(W, n, dtype):
    v = W[n]
    if torch.is_tensor(v):      # trainable parameters (models/nano/train_vae.py trains this model)
        return v.to(dtype)
    return torch.from_numpy(np.ascontiguousarray(v)).to(dtype)


def gn(W, p, x, groups, dtype):
    return F.group_norm(x, groups, T(W, p + ".weight", dtype), T(W, p + ".bias", dtype), eps=EPS)


def conv(W, p, x, dtype, stride=1, padding=1):
    return F.conv2d(x, T(W, p + ".weight", dtype), T(W, p + ".bias", dtype), stride=stride, padding=padding)


def resnet(W, p, x, g, dt):
    h = conv(W, p + ".conv1", F.silu(gn(W, p + ".norm1", x, g, dt)), dt)
    h = conv(W, p + ".conv2", F.silu(gn(W, p + ".norm2", h, g, dt)), dt)
    if p + ".conv_shortcut.weight" in W:
        x = conv(W, p + ".conv_shortcut", x, dt, padding=0)
    return x + h


def attention(W, p, x, g, dt):
    _, C, H, Wd = x.shape
    t = gn(W, p + ".group_norm", x, g, dt).reshape(C, H * Wd).t()          # tokens [HW, C]
    lin = lambda n: t @ T(W, p + "." + n + ".weight", dt).t() + T(W, p + "." + n + ".bias", dt)  # noqa: E731
    q, k, v = lin("to_q"), lin("to_k"), lin("to_v")
    a = torch.softmax(q @ k.t() / math.sqrt(C), dim=-1) @ v
    o = a @ T(W, p + ".to_out.0.weight", dt).t() + T(W, p + ".to_out.0.bias", dt)
    return x + o.t().reshape(1, C, H, Wd)


def encode(W, c, img, dt=None, pad=(0, 1, 0, 1), attn=True):
    dt = dt or torch.float32
    g, L = c["groups"], len(c["ch"])
    x = torch.from_numpy(img).to(dt)[None]
    x = conv(W, "encoder.conv_in", x, dt)
    for i in range(L):
        for j in range(c["layers"]):
            x = resnet(W, "encoder.down_blocks.%d.resnets.%d" % (i, j), x, g, dt)
        if i < L - 1:
            x = F.pad(x, pad)                      # (left, right, top, bottom): right and bottom by one
            x = conv(W, "encoder.down_blocks.%d.downsamplers.0.conv" % i, x, dt, stride=2, padding=0)
    x = resnet(W, "encoder.mid_block.resnets.0", x, g, dt)
    if attn:
        x = attention(W, "encoder.mid_block.attentions.0", x, g, dt)
    x = resnet(W, "encoder.mid_block.resnets.1", x, g, dt)
    x = conv(W, "encoder.conv_out", F.silu(gn(W, "encoder.conv_norm_out", x, g, dt)), dt)
    if c["quant"]:
        x = conv(W, "quant_conv", x, dt, padding=0)
    return x[0, :c["latent"]].to(torch.float32).numpy()


def decode(W, c, lat, dt=None, attn=True):
    dt = dt or torch.float32
    g, L = c["groups"], len(c["ch"])
    x = torch.from_numpy(lat).to(dt)[None]
    if c["quant"]:
        x = conv(W, "post_quant_conv", x, dt, padding=0)
    x = conv(W, "decoder.conv_in", x, dt)
    x = resnet(W, "decoder.mid_block.resnets.0", x, g, dt)
    if attn:
        x = attention(W, "decoder.mid_block.attentions.0", x, g, dt)
    x = resnet(W, "decoder.mid_block.resnets.1", x, g, dt)
    for k in range(L):
        for j in range(c["layers"] + 1):
            x = resnet(W, "decoder.up_blocks.%d.resnets.%d" % (k, j), x, g, dt)
        if k < L - 1:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = conv(W, "decoder.up_blocks.%d.upsamplers.0.conv" % k, x, dt)
    x = conv(W, "decoder.conv_out", F.silu(gn(W, "decoder.conv_norm_out", x, g, dt)), dt)
    return x[0].to(torch.float32).numpy()


def rel(a, b):
    return float(np.linalg.norm((a - b).ravel()) / max(np.linalg.norm(b.ravel()), 1e-30))


# ----------------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "vae"))
    ap.add_argument("--weights-only", action="store_true",
                    help="numpy only: regenerate the git-ignored weight files and verify weights.sha256")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    out = args.out
    os.makedirs(out, exist_ok=True)
    cfgs = {}
    weights = {}
    for n, c in CONFIGS.items():
        c = dict(c, name=n)
        cfgs[n] = c
        W = gen_weights(c)
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
        L, f = len(c["ch"]), factor(c)
        log("%s: %d parameters, %d tensors, factor %d" % (n, sum(v.size for v in W.values()), len(W), f))
        # the layouts read back give exactly the generated weights
        dif = st.read(os.path.join(cdir, "diffusers/vae/diffusion_pytorch_model.safetensors"))[0]
        if n == "tiny_c":
            assert any(".query." in k for k in dif) and not any(".to_q." in k for k in dif)
            dif = {k.replace(".query.", ".to_q.").replace(".key.", ".to_k.").replace(".value.", ".to_v.")
                   .replace(".proj_attn.", ".to_out.0."): v for k, v in dif.items()}
        bfl = from_bfl(st.read(os.path.join(cdir, "ae.safetensors"))[0], L)
        assert sorted(dif) == sorted(W) and sorted(bfl) == sorted(W)
        for k in W:
            assert np.array_equal(dif[k], W[k]) and np.array_equal(bfl[k], W[k]), k
        raw = st.read(os.path.join(cdir, "ae.safetensors"))[0]
        assert raw["decoder.up.0.block.0.conv1.weight"].shape == W["decoder.up_blocks.%d.resnets.0.conv1.weight" % (L - 1)].shape
        assert raw["encoder.mid.attn_1.q.weight"].shape == (c["ch"][-1], c["ch"][-1], 1, 1)
        for case in CASES[n]:
            img, lat = gen_inputs(c, case)
            st.write(os.path.join(cdir, "in_%s.safetensors" % case), {"image": img, "latent": lat})
            m = encode(W, c, img)
            d = decode(W, c, lat)
            assert m.shape == (c["latent"], img.shape[1] // f, img.shape[2] // f), m.shape
            assert d.shape == (3, lat.shape[1] * f, lat.shape[2] * f), d.shape
            assert np.all(np.isfinite(m)) and np.all(np.isfinite(d))
            st.write(os.path.join(cdir, "enc_%s.safetensors" % case), {"mean": m})
            st.write(os.path.join(cdir, "dec_%s.safetensors" % case), {"decoded": d})
            # float64 agrees (the float32 run is accurate)
            r64e = rel(m, encode(W, c, img, torch.float64))
            r64d = rel(d, decode(W, c, lat, torch.float64))
            assert r64e < 1e-5 and r64d < 1e-5, (r64e, r64d)
            # sensitivity: attention, the padding side, the group count all matter
            r_att = rel(decode(W, c, lat, attn=False), d)
            r_atte = rel(encode(W, c, img, attn=False), m)
            r_pad = rel(encode(W, c, img, pad=(1, 0, 1, 0)), m)
            c2 = dict(c, groups=c["groups"] // 2)
            r_g = rel(decode(W, c2, lat), d)
            assert r_att > 1e-3 and r_atte > 1e-3 and r_pad > 1e-3 and r_g > 1e-3, (r_att, r_atte, r_pad, r_g)
            log("%s %s: std mean %.3f decoded %.3f | f64 %.1e %.1e | no-attn dec %.3f enc %.3f | pad left/top %.3f"
                " | groups/2 %.3f" % (n, case, np.std(m), np.std(d), r64e, r64d, r_att, r_atte, r_pad, r_g))
        if n == "tiny_a":
            img, lat = gen_inputs(c, "case0")
            m = st.read(os.path.join(cdir, "enc_case0.safetensors"))[0]["mean"]
            d = st.read(os.path.join(cdir, "dec_case0.safetensors"))[0]["decoded"]
            for tag, rnd in (("bf16", st.round_bf16), ("f16", st.round_f16)):
                Wr = {k: rnd(v) for k, v in W.items()}
                mr, dr = encode(Wr, c, img), decode(Wr, c, lat)
                st.write(os.path.join(cdir, "enc_%s_case0.safetensors" % tag), {"mean": mr})
                st.write(os.path.join(cdir, "dec_%s_case0.safetensors" % tag), {"decoded": dr})
                log("tiny_a case0: %s weights rel diff enc %.2e dec %.2e" % (tag, rel(mr, m), rel(dr, d)))
                assert 1e-6 < rel(mr, m) < 5e-2 and 1e-6 < rel(dr, d) < 5e-2
            pb = st.read(os.path.join(cdir, "ae_bf16_prefixed.safetensors"))[0]
            bb = from_bfl(pb, L, "first_stage_model.")
            assert all(np.array_equal(bb[k], st.round_bf16(W[k])) for k in W)
    print("vae_ref: wrote %s (self-checks passed)" % out)


if __name__ == "__main__":
    main()
