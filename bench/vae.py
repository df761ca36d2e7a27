#!/usr/bin/env python3
"""Full-size FLUX.1 VAE (4 levels [128,256,512,512], 2 ResBlocks, GroupNorm 32, 16 latent channels,
83.8M parameters) with random weights: decode of a 128x128 latent (a 1024^2 image) and encode of a
1024^2 image, zlora (untiled and tiled) side by side with PyTorch running tests/ref/vae_ref.py's
implementation of the same network on the same weights, same thread count. Prints a Markdown table.

usage: /usr/bin/python3 bench/vae.py [--side 1024] [--dir /tmp/zlora-vae-bench] [--tile 64 --overlap 16]
"""
import argparse, json, os, resource, subprocess, sys, time

import numpy as np

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "tests", "ref"))
import st  # noqa: E402
import vae_ref as R  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--side", type=int, default=1024)
ap.add_argument("--dir", default="/tmp/zlora-vae-bench")
ap.add_argument("--tile", type=int, default=64)
ap.add_argument("--overlap", type=int, default=16)
ap.add_argument("--zlora", default=os.path.join(here, "..", "zlora"))
a = ap.parse_args()

c = dict(name="full", ch=[128, 256, 512, 512], layers=2, groups=32, latent=16, quant=False, scaling=0.3611, shift=0.1159)
os.makedirs(a.dir, exist_ok=True)
W = R.gen_weights(c)
vdir = os.path.join(a.dir, "vae")
os.makedirs(vdir, exist_ok=True)
with open(os.path.join(vdir, "config.json"), "w") as fh:
    json.dump(R.diffusers_config(c), fh)
st.write(os.path.join(vdir, "diffusion_pytorch_model.safetensors"), {n: (v, "F32") for n, v in W.items()}, {"format": "pt"})
rng = np.random.default_rng(0)
h = a.side // 8
lat = rng.standard_normal((16, h, h)).astype(np.float32)
img = np.clip(rng.standard_normal((3, a.side, a.side)) * 0.5, -1, 1).astype(np.float32)
st.write(os.path.join(a.dir, "lat.safetensors"), {"latent": (lat, "F32")})
st.write(os.path.join(a.dir, "img.safetensors"), {"image": (img, "F32")})


def zl(args):
    out = os.path.join(a.dir, "time.txt")
    cmd = ["/usr/bin/time", "-f", "%e %M", "-o", out, a.zlora, "-q", "debug", "vae", "--model", vdir] + args + \
          ["--out", os.path.join(a.dir, "o.safetensors")]
    subprocess.run(cmd, check=True)
    s, kb = open(out).read().split()
    return float(s), int(kb) / 1024


rows = []
for what, inp in (("decode", "lat"), ("encode", "img")):
    flag = "--decode" if what == "decode" else "--encode"
    s0, m0 = zl([flag, os.path.join(a.dir, inp + ".safetensors")])
    s1, m1 = zl([flag, os.path.join(a.dir, inp + ".safetensors"), "--tile", str(a.tile), "--overlap", str(a.overlap)])
    rows.append([what, s0, m0, s1, m1])

# PyTorch in a child process each, so that peak RSS is per operation
code = r'''
import sys, time, resource, json, numpy as np
sys.path.insert(0, sys.argv[1]); import st, vae_ref as R
R._import_torch(); import torch
c = json.loads(sys.argv[2]); W = st.read(sys.argv[3])[0]
x = list(st.read(sys.argv[4])[0].values())[0]
with torch.no_grad():
    t0 = time.perf_counter()
    (R.decode if sys.argv[5] == "decode" else R.encode)(W, c, x)
    dt = time.perf_counter() - t0
print(dt, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, torch.get_num_threads())
'''
for r in rows:
    inp = os.path.join(a.dir, ("lat" if r[0] == "decode" else "img") + ".safetensors")
    out = subprocess.run([sys.executable, "-c", code, os.path.join(here, "..", "tests", "ref"), json.dumps(c),
                          os.path.join(vdir, "diffusion_pytorch_model.safetensors"), inp, r[0]],
                         check=True, capture_output=True, text=True).stdout.split()
    r += [float(out[0]), float(out[1]), int(out[2])]

print(f"| {a.side}² | zlora untiled s | RSS MB | zlora tiled {a.tile}/{a.overlap} s | RSS MB | PyTorch s | PyTorch RSS MB | speed-up (untiled) |")
print("|---|---|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r[0]} | {r[1]:.1f} | {r[2]:.0f} | {r[3]:.1f} | {r[4]:.0f} | {r[5]:.1f} | {r[6]:.0f} | {r[5] / r[1]:.2f}x |")
