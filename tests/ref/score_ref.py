#!/usr/bin/env python3
"""score_ref.py — the numpy reference for src/eval/score.c (`zlora score`): writes the small test images of
tests/data/score/ and golden.json, the scores tests/test_score.c must reproduce (within 1e-5 relative).

  /usr/bin/python3 tests/ref/score_ref.py [--out tests/data/score]

Written from the definitions in src/eval/score.h, not from the C code, and computed differently where it
can be: 2-D windows (sliding_window_view · outer product) instead of separable passes, numpy's own
"reflect" padding, numpy's var. Needs numpy and Pillow (PNG writing and reading: 8-bit images only, which
Pillow decodes exactly).

Images (8-bit RGB PNG, 96×64, deterministic: the texture's noise comes from keyrng):
  texture.png        gradients, gratings of several periods, a checkerboard, hard-edged disks, mild noise
  texture_shift.png  the texture moved one pixel right (first column repeated)
  texture_noise.png  the texture plus Gaussian-like noise (std 0.05)
  texture_blur.png   the texture blurred with the documented Gaussian, σ = 1.5, rounded to 8 bits
golden.json:
  images   {file: {sharpness, hf_ratio}} for those four and three tiny images of tests/data/images (borders)
  pairs    [{image, reference, difference, ssim}]
  blurred  [{image, sigma, sharpness, hf_ratio}]: the texture blurred (in float, not rounded) by σ
"""
import argparse
import json
import math
import os
import sys

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import keyrng  # noqa: E402

W, H = 96, 64
HF_SIGMA = 1.0
SSIM_SIGMA, SSIM_WIN, C1, C2 = 1.5, 11, 0.01 ** 2, 0.03 ** 2


# ---------------------------------------------------------------- the definitions

def luma(rgb):
    """Rec.601 luma of rgb [h, w, 3] in [0, 1]."""
    return 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]


def gaussian_2d(sigma, r):
    t = np.arange(-r, r + 1, dtype=np.float64)
    g = np.exp(-t * t / (2 * sigma * sigma))
    g /= g.sum()
    return np.outer(g, g)


def blur(plane, sigma):
    """Gaussian blur of a 2-D plane: taps |k| <= ceil(3σ), normalised, mirrored borders (numpy 'reflect')."""
    r = int(math.ceil(3 * sigma))
    p = np.pad(plane, r, mode="reflect")
    win = sliding_window_view(p, (2 * r + 1, 2 * r + 1))
    return np.einsum("ijkl,kl->ij", win, gaussian_2d(sigma, r))


def sharpness(rgb):
    y = luma(rgb)
    p = np.pad(y, 1, mode="reflect")
    lap = p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:] - 4 * y
    return float(lap.var())


def hf_ratio(rgb):
    y = luma(rgb)
    var = float(y.var())
    if var < 1e-14:
        return 0.0
    return float(np.mean((y - blur(y, HF_SIGMA)) ** 2) / var)


def difference(a, b):
    return float(np.mean(np.abs(a - b)))


def ssim(a, b):
    x, y = luma(a), luma(b)
    win = gaussian_2d(SSIM_SIGMA, SSIM_WIN // 2)

    def local_mean(z):  # the window at every position where it lies inside the image
        return np.einsum("ijkl,kl->ij", sliding_window_view(z, (SSIM_WIN, SSIM_WIN)), win)

    mx, my = local_mean(x), local_mean(y)
    vx = local_mean(x * x) - mx * mx
    vy = local_mean(y * y) - my * my
    cxy = local_mean(x * y) - mx * my
    m = ((2 * mx * my + C1) * (2 * cxy + C2)) / ((mx * mx + my * my + C1) * (vx + vy + C2))
    return float(m.mean())


# ---------------------------------------------------------------- images

def texture():
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    img = np.zeros((H, W, 3))
    for c, ph in enumerate((0.0, 1.3, 2.6)):  # smooth colour field
        img[..., c] = 0.5 + 0.2 * np.sin(2 * np.pi * xx / 47 + ph) * np.cos(2 * np.pi * yy / 31 - ph)
    left = xx < 32  # gratings of periods 3, 5 and 8 px in three bands
    for band, period in enumerate((3.0, 5.0, 8.0)):
        m = left & (yy >= band * 21) & (yy < band * 21 + 21)
        for c in range(3):
            img[..., c] = np.where(m, 0.5 + 0.35 * np.sin(2 * np.pi * (xx + 0.5 * c) / period), img[..., c])
    cb = (xx >= 64) & (yy < 32)  # checkerboard of 4 px squares
    chk = ((xx // 4 + yy // 4) % 2) * 0.7 + 0.15
    img[cb] = np.stack([chk, 1 - chk, chk * 0.5 + 0.2], -1)[cb]
    for cx, cy, rad, col in ((48, 20, 9, (0.9, 0.2, 0.1)), (78, 48, 12, (0.1, 0.3, 0.85)), (44, 50, 6, (0.95, 0.9, 0.2))):
        img[(xx - cx) ** 2 + (yy - cy) ** 2 <= rad * rad] = col  # hard-edged disks
    img += (keyrng.uniform("score/texture", (H, W, 3)) - 0.5) * 0.06
    return np.clip(np.round(img * 255), 0, 255).astype(np.uint8)


def to8(x):
    return np.clip(np.round(x * 255), 0, 255).astype(np.uint8)


def read(path):
    """RGB float64 in [0, 1]; alpha composited on white (rgb·a + 1·(1 − a)), as zlora reads it."""
    im = Image.open(path)
    if im.mode in ("LA", "RGBA", "PA") or (im.mode == "P" and "transparency" in im.info):
        a = np.asarray(im.convert("RGBA"), dtype=np.float64) / 255.0
        return a[..., :3] * a[..., 3:4] + (1.0 - a[..., 3:4])
    return np.asarray(im.convert("RGB"), dtype=np.float64) / 255.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(HERE, "..", "data", "score"))
    args = ap.parse_args()
    out = args.out
    os.makedirs(out, exist_ok=True)

    t8 = texture()
    t = t8 / 255.0
    shift = t8.copy()
    shift[:, 1:] = t8[:, :-1]
    noise = to8(t + 0.05 * keyrng.randn("score/noise", (H, W, 3)).astype(np.float64))
    blurred = np.stack([blur(t[..., c], 1.5) for c in range(3)], -1)
    files = {"texture.png": t8, "texture_shift.png": shift, "texture_noise.png": noise, "texture_blur.png": to8(blurred)}
    for name, px in files.items():
        Image.fromarray(px, "RGB").save(os.path.join(out, name))

    images = {}
    px = {}
    for name in files:
        px[name] = read(os.path.join(out, name))
        images[name] = {"sharpness": sharpness(px[name]), "hf_ratio": hf_ratio(px[name])}
    tiny = os.path.join(HERE, "..", "data", "images")
    for name in ("rgb8_adam7_text.png", "gray1.png", "ga8.png"):  # 10x9, 11x5, 3x4: mirrored borders
        p = read(os.path.join(tiny, name))
        images["../images/" + name] = {"sharpness": sharpness(p), "hf_ratio": hf_ratio(p)}

    pairs = []
    for a, b in (("texture.png", "texture.png"), ("texture_shift.png", "texture.png"),
                 ("texture_noise.png", "texture.png"), ("texture_blur.png", "texture.png"),
                 ("texture.png", "texture_noise.png")):
        pairs.append({"image": a, "reference": b, "difference": difference(px[a], px[b]), "ssim": ssim(px[a], px[b])})

    blurs = []
    for s in (0.5, 1.0, 2.0, 3.0):
        b = np.stack([blur(px["texture.png"][..., c], s) for c in range(3)], -1)
        blurs.append({"image": "texture.png", "sigma": s, "sharpness": sharpness(b), "hf_ratio": hf_ratio(b)})

    gold = {"about": "written by tests/ref/score_ref.py; definitions in src/eval/score.h",
            "images": images, "pairs": pairs, "blurred": blurs}
    with open(os.path.join(out, "golden.json"), "w") as f:
        json.dump(gold, f, indent=1)
        f.write("\n")
    for k, v in images.items():
        print(f"{k:28s} sharpness {v['sharpness']:.6f}  hf_ratio {v['hf_ratio']:.4f}")
    for p in pairs:
        print(f"{p['image']:18s} vs {p['reference']:18s} difference {p['difference']:.6f}  1-ssim {1 - p['ssim']:.6f}")
    for b in blurs:
        print(f"texture blurred sigma {b['sigma']:3.1f}     sharpness {b['sharpness']:.6f}  hf_ratio {b['hf_ratio']:.4f}")


if __name__ == "__main__":
    main()
