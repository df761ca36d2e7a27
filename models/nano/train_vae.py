#!/usr/bin/env python3
"""train_vae.py — trains the nano VAE: a FLUX.1-architecture AutoencoderKL (tests/ref/vae_ref.py's model,
diffusers names) on the procedural nano scenes, then writes it as a diffusers vae/ folder with the latent
scaling and shift measured on its own latents. This reference script trains the VAE, not zlora (zlora only
runs it, and tests/test_nano_vae.c checks that it runs it exactly).

Usage (needs python3-torch and Pillow; CPU):
  /usr/bin/python3 models/nano/train_vae.py --data build/nano/data --heldout build/nano/heldout \\
      --out models/nano/vae [--steps 2800] [--golden tests/data/nano]
  /usr/bin/python3 models/nano/train_vae.py --heldout build/nano/heldout --from models/nano/vae \\
      --golden tests/data/nano          # no training: PSNR of a trained VAE and its goldens

Model: block channels --ch (default 32,32,64,64: 4 levels, spatial factor 8), --layers ResBlocks per
encoder level (decoder: one more), GroupNorm(--groups 8), 16 latent channels, mid-block attention, no
quant convs: exactly what zlora's vae.h loads (Z-Image's VAE at a smaller width).

Training: AdamW (lr 1.5e-3, betas 0.9/0.99, weight decay 1e-4, warm-up 50 steps, cosine to 5%), batch 16
whole 64x64 images with random left-right flips, gradient norm clipped at 1; loss = L1 + MSE on pixels in
[-1, 1] + --grad-loss (1) x L1 of the horizontal and vertical pixel differences (sharper edges) + --kl
(1e-6) x KL(N(mean, var) || N(0, 1)) (mean over elements), latents sampled with the reparameterisation
trick. One torch thread by default (on the shared 2-core machine two threads were 4x slower). --crop N
trains on N x N crops first (cheaper per step, but in a trial the PSNR on whole images only rose once
whole images were used; off by default).

Export: the weights rounded to --dtype (default BF16, as the published Z-Image VAE; zlora widens them to
fp32 when loading, as the official pipeline runs the VAE in fp32), config.json from vae_ref's
diffusers_config with scaling_factor = 1/std and shift_factor = mean of the encoder means of 2000 training
images (every element), so normalised latents have mean 0 and std 1 as the DiT expects. Reports the
held-out PSNR (8-bit, decode(encode(x)) with the latent mean) of the float32 and of the exported weights.

With --golden DIR: vae_case{0,1}.safetensors with mean [16,8,8] = encode(held-out image i) and decoded
[3,64,64] = decode(that mean), from vae_ref.py's float32 forward on the exported weights (the C test
renders the same images with zl_nano_render).

Not bit-reproducible across machines (torch's CPU kernels sum in a thread-dependent order): the
committed files are the ones whose run models/nano/README.md reports.
"""
import argparse
import glob
import json
import math
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "ref"))
import st  # noqa: E402
import vae_ref  # noqa: E402


def load_images(d, limit=0):
    from PIL import Image
    files = sorted(glob.glob(os.path.join(d, "*.png")))
    if limit:
        files = files[:limit]
    assert files, "no images in " + d
    return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])   # [N, H, W, 3] uint8


def to_model(u8):
    import torch
    return torch.from_numpy(u8).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def encode(W, c, x):
    """x [B, 3, H, W] -> [B, 2*latent, H/f, W/f] (mean | logvar): vae_ref.encode's steps on batches."""
    import torch
    F = torch.nn.functional
    dt, g, L = torch.float32, c["groups"], len(c["ch"])
    x = vae_ref.conv(W, "encoder.conv_in", x, dt)
    for i in range(L):
        for j in range(c["layers"]):
            x = vae_ref.resnet(W, "encoder.down_blocks.%d.resnets.%d" % (i, j), x, g, dt)
        if i < L - 1:
            x = F.pad(x, (0, 1, 0, 1))
            x = vae_ref.conv(W, "encoder.down_blocks.%d.downsamplers.0.conv" % i, x, dt, stride=2, padding=0)
    x = vae_ref.resnet(W, "encoder.mid_block.resnets.0", x, g, dt)
    x = torch.cat([vae_ref.attention(W, "encoder.mid_block.attentions.0", x[i:i + 1], g, dt) for i in range(x.shape[0])])
    x = vae_ref.resnet(W, "encoder.mid_block.resnets.1", x, g, dt)
    return vae_ref.conv(W, "encoder.conv_out", F.silu(vae_ref.gn(W, "encoder.conv_norm_out", x, g, dt)), dt)


def decode(W, c, z):
    import torch
    F = torch.nn.functional
    dt, g, L = torch.float32, c["groups"], len(c["ch"])
    x = vae_ref.conv(W, "decoder.conv_in", z, dt)
    x = vae_ref.resnet(W, "decoder.mid_block.resnets.0", x, g, dt)
    x = torch.cat([vae_ref.attention(W, "decoder.mid_block.attentions.0", x[i:i + 1], g, dt) for i in range(x.shape[0])])
    x = vae_ref.resnet(W, "decoder.mid_block.resnets.1", x, g, dt)
    for k in range(L):
        for j in range(c["layers"] + 1):
            x = vae_ref.resnet(W, "decoder.up_blocks.%d.resnets.%d" % (k, j), x, g, dt)
        if k < L - 1:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = vae_ref.conv(W, "decoder.up_blocks.%d.upsamplers.0.conv" % k, x, dt)
    return vae_ref.conv(W, "decoder.conv_out", F.silu(vae_ref.gn(W, "decoder.conv_norm_out", x, g, dt)), dt)


def init_params(c, seed):
    import torch
    gen = torch.Generator().manual_seed(seed)
    W = {}
    for n, shp in sorted(vae_ref.shapes(c).items()):
        if len(shp) == 1:
            v = torch.ones(shp) if n.endswith(".weight") else torch.zeros(shp)
        else:
            fan_in = int(np.prod(shp[1:]))
            gain = 0.3 if n.endswith("conv2.weight") or n.endswith("to_out.0.weight") else 1.0  # residual branches start small
            v = torch.randn(shp, generator=gen) * (gain / math.sqrt(fan_in))
        W[n] = torch.nn.Parameter(v)
    return W


def psnr_u8(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2, axis=(1, 2, 3))
    return float(np.mean(10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-10))))


def reconstruct(W, c, u8, bs=32):
    import torch
    out = []
    with torch.no_grad():
        for i in range(0, len(u8), bs):
            x = to_model(u8[i:i + bs])
            y = decode(W, c, encode(W, c, x)[:, :c["latent"]])
            out.append(((y.clamp(-1, 1) + 1) * 127.5).round().permute(0, 2, 3, 1).numpy().astype(np.uint8))
    return np.concatenate(out)


def latent_stats(W, c, u8, bs=32):
    import torch
    s = s2 = n = 0.0
    with torch.no_grad():
        for i in range(0, len(u8), bs):
            m = encode(W, c, to_model(u8[i:i + bs]))[:, :c["latent"]].double()
            s += float(m.sum())
            s2 += float((m * m).sum())
            n += m.numel()
    mean = s / n
    return mean, math.sqrt(s2 / n - mean * mean)


def load_vae(d):
    """A vae/ folder written by this script -> (config dict for vae_ref, numpy weights)."""
    cfg = json.load(open(os.path.join(d, "config.json")))
    c = dict(name="nano", ch=cfg["block_out_channels"], layers=cfg["layers_per_block"], groups=cfg["norm_num_groups"],
             latent=cfg["latent_channels"], quant=cfg["use_quant_conv"], scaling=cfg["scaling_factor"],
             shift=cfg["shift_factor"])
    return c, st.read(os.path.join(d, "diffusion_pytorch_model.safetensors"))[0]


def train(args, c, data, held):
    import torch
    rng = np.random.default_rng(args.seed)
    N, S = data.shape[0], data.shape[1]
    W = init_params(c, args.seed)
    if args.init:   # continue from a trained VAE (same architecture)
        c0, W0 = load_vae(args.init)
        assert c0["ch"] == c["ch"] and c0["layers"] == c["layers"] and c0["groups"] == c["groups"], "--init: another architecture"
        for k in W:
            W[k].data.copy_(torch.from_numpy(W0[k]))
        print("starting from %s" % args.init)
    nparam = sum(p.numel() for p in W.values())
    print("nano VAE: ch %s, %d ResBlocks/level, GroupNorm %d, factor %d, %d parameters; %d training images %dx%d, "
          "%d held out" % (c["ch"], c["layers"], c["groups"], vae_ref.factor(c), nparam, N, S, S, len(held)), flush=True)
    opt = torch.optim.AdamW(W.values(), lr=args.lr, betas=(0.9, 0.99), weight_decay=1e-4)
    crop = 0 < args.crop < S
    full_from = int(args.steps * (1 - args.full_frac)) if crop else 0
    t0 = time.time()
    for step in range(args.steps):
        lr = args.lr * min(1.0, (step + 1) / 50) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / args.steps)))
        for gr in opt.param_groups:
            gr["lr"] = lr
        idx = rng.integers(0, N, args.batch)
        x = data[idx]
        if step < full_from:
            o = rng.integers(0, S - args.crop + 1, (2,))
            x = x[:, o[0]:o[0] + args.crop, o[1]:o[1] + args.crop]
        if rng.random() < 0.5:
            x = x[:, :, ::-1]
        x = to_model(np.ascontiguousarray(x))
        h = encode(W, c, x)
        mean, logvar = h[:, :c["latent"]], h[:, c["latent"]:].clamp(-30.0, 20.0)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        y = decode(W, c, z)
        rec = (y - x).abs().mean() + ((y - x) ** 2).mean()
        if args.grad_loss:   # edges: L1 of the horizontal and vertical differences
            rec = rec + args.grad_loss * (((y[..., 1:] - y[..., :-1]) - (x[..., 1:] - x[..., :-1])).abs().mean() +
                                          ((y[..., 1:, :] - y[..., :-1, :]) - (x[..., 1:, :] - x[..., :-1, :])).abs().mean())
        kl = 0.5 * (mean ** 2 + logvar.exp() - 1.0 - logvar).mean()
        loss = rec + args.kl * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(W.values()), 1.0)
        opt.step()
        if (step + 1) % 50 == 0 or step == 0:
            print("step %5d/%d  %s  loss %.4f (rec %.4f kl %.1f)  lr %.2e  %.0f s" % (
                step + 1, args.steps, "crop" if step < full_from else "full", float(loss), float(rec), float(kl), lr,
                time.time() - t0), flush=True)
        if (step + 1) % args.eval_every == 0 and step + 1 < args.steps:
            print("  held-out PSNR %.2f dB" % psnr_u8(reconstruct(W, c, held[:32]), held[:32]), flush=True)
    print("trained %d steps in %.0f s" % (args.steps, time.time() - t0), flush=True)
    return {k: v.detach().numpy().astype(np.float32) for k, v in W.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", help="training images, folders separated by commas (zlora debug nano-data); the first"
                    " one's latents give the scaling and shift (the DiT's data); not needed with --from")
    ap.add_argument("--eval", default="", help="more image folders to report the PSNR of (commas)")
    ap.add_argument("--heldout", required=True, help="held-out images (another seed) for PSNR")
    ap.add_argument("--out", default=os.path.join(HERE, "vae"))
    ap.add_argument("--from", dest="src", help="no training: report on this vae/ folder (and write --golden)")
    ap.add_argument("--init", help="start training from this vae/ folder's weights instead of random ones")
    ap.add_argument("--ch", default="32,32,64,64")
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--groups", type=int, default=8)
    ap.add_argument("--steps", type=int, default=2800)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--crop", type=int, default=0, help="train on random crops of this side first (0: never)")
    ap.add_argument("--full-frac", type=float, default=0.25, help="with --crop: the last fraction of the steps on whole images")
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--kl", type=float, default=1e-6)
    ap.add_argument("--grad-loss", type=float, default=1.0, help="weight of the L1 loss on image differences (edges)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: on a busy 2-core machine two were 4x slower)")
    ap.add_argument("--dtype", default="BF16", choices=["BF16", "F32"])
    ap.add_argument("--eval-every", type=int, default=400)
    ap.add_argument("--golden", help="write vae_case{0,1}.safetensors to this folder")
    args = ap.parse_args()

    import torch
    vae_ref._import_torch()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    held = load_images(args.heldout)
    data = np.concatenate([load_images(d) for d in args.data.split(",")]) if not args.src else None
    first = len(load_images(args.data.split(",")[0])) if not args.src else 0
    S = held.shape[1]
    if args.src:
        c, We = load_vae(args.src)
    else:
        c = dict(name="nano", ch=[int(v) for v in args.ch.split(",")], layers=args.layers, groups=args.groups,
                 latent=16, quant=False)
        assert all(ch % c["groups"] == 0 for ch in c["ch"]), "GroupNorm groups must divide every width"
        assert S % vae_ref.factor(c) == 0 and args.crop % vae_ref.factor(c) == 0
        Wf = train(args, c, data, held)
        print("held-out PSNR %.2f dB (float32 weights)" % psnr_u8(reconstruct(
            {k: torch.from_numpy(v) for k, v in Wf.items()}, c, held), held))
        We = {k: (st.round_bf16(v) if args.dtype == "BF16" else v) for k, v in Wf.items()}
    Wt = {k: torch.from_numpy(v) for k, v in We.items()}
    rec = reconstruct(Wt, c, held)
    per = [psnr_u8(rec[i:i + 1], held[i:i + 1]) for i in range(len(held))]
    print("held-out PSNR %.2f dB (%d scenes; min %.2f, max %.2f); first 16: %.2f dB" % (
        psnr_u8(rec, held), len(held), min(per), max(per), psnr_u8(rec[:16], held[:16])))
    for d in [d for d in args.eval.split(",") if d]:
        im = load_images(d)
        print("%s: PSNR %.2f dB (%d images)" % (d, psnr_u8(reconstruct(Wt, c, im), im), len(im)))
    if not args.src:
        mean, std = latent_stats(Wt, c, data[:min(first, 2000)])
        c["scaling"], c["shift"] = round(1.0 / std, 4), round(mean, 4)
        os.makedirs(args.out, exist_ok=True)
        cfg = vae_ref.diffusers_config(c)
        cfg["sample_size"] = S
        with open(os.path.join(args.out, "config.json"), "w") as fh:
            json.dump(cfg, fh, indent=2, sort_keys=True)
            fh.write("\n")
        st.write(os.path.join(args.out, "diffusion_pytorch_model.safetensors"),
                 {k: (v, args.dtype) for k, v in We.items()},
                 {"format": "pt", "note": "zlora nano VAE, trained by models/nano/train_vae.py"})
        print("%s: %s weights; latents mean %.4f std %.4f -> scaling_factor %.4f shift_factor %.4f" % (
            args.out, args.dtype, mean, std, c["scaling"], c["shift"]), flush=True)
    if args.golden:
        os.makedirs(args.golden, exist_ok=True)
        for i in range(2):
            img = to_model(held[i:i + 1])[0].numpy()
            m = vae_ref.encode(We, c, img)
            d = vae_ref.decode(We, c, m)
            r64 = vae_ref.rel(m, vae_ref.encode(We, c, img, torch.float64))
            assert r64 < 1e-5, r64
            st.write(os.path.join(args.golden, "vae_case%d.safetensors" % i), {"mean": m, "decoded": d},
                     {"image": "held-out scene %d (zlora debug nano-data --seed 1)" % i})
        print("golden: %s/vae_case{0,1}.safetensors" % args.golden)


if __name__ == "__main__":
    main()
