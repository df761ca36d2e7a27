"""Goldens for tests/test_generate.c, from independent references:
- noise.safetensors: torch.randn(n, generator=torch.manual_seed(seed)) from Debian's PyTorch, for several
  seeds and sizes (below 16, a multiple of 16, a remainder), once with torch's default CPU kernel dispatch
  (x86: the AVX2 kernel) and once with ATEN_CPU_CAPABILITY=default (the portable kernel).
- sampler.json: trajectories of the Euler and res_multistep samplers written here in numpy from their
  definitions (spec §6; ComfyUI's sample_res_multistep with eta 0), on a toy velocity field, with the
  schedule from the spec formula, so the C samplers are checked against a second implementation.
Usage: /usr/bin/python3 tests/ref/sample_ref.py [--out tests/data/gen]"""
import json, os, subprocess, sys
import numpy as np

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
import st  # noqa: E402

CASES = [(0, 5), (42, 16), (42, 37), (7, 1008), (4294967301, 2048), (123456789, 16 * 24 * 20)]


def noise(variant):
    code = ("import torch, json, sys\n"
            "cap = [l for l in torch.__config__.show().splitlines() if 'CPU capability usage' in l]\n"
            "out = {'capability': cap[0].split(':')[1].strip() if cap else '?', 'data': []}\n"
            f"for seed, n in {CASES!r}:\n"
            "    out['data'].append(torch.randn(n, generator=torch.manual_seed(seed)).tolist())\n"
            "json.dump(out, sys.stdout)\n")
    env = dict(os.environ)
    if variant == "scalar":
        env["ATEN_CPU_CAPABILITY"] = "default"
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(r.stdout)


def sigmas(n, shift):
    s = np.linspace(1.0, 1.0 / n, n)
    sig = shift * s / (1 + (shift - 1) * s)
    return np.append(sig, 0.0).astype(np.float32)


def velocity(x, sig):
    """A smooth toy field standing in for −DiT: depends on x and σ, nonlinear in both."""
    return (np.tanh(x) * (0.5 + sig) - 0.3 * np.cos(3 * sig) * x + 0.2).astype(np.float32)


def euler(x, sig):
    for i in range(len(sig) - 1):
        x = x + (sig[i + 1] - sig[i]) * velocity(x, sig[i])
    return x


def res_multistep(x, sig):
    old_denoised, old_sigma_down = None, None
    for i in range(len(sig) - 1):
        s, s_next = float(sig[i]), float(sig[i + 1])
        denoised = x - s * velocity(x, sig[i])
        sigma_down = s_next  # eta = 0: no ancestral noise
        if sigma_down == 0 or old_denoised is None:
            d = (x - denoised) / s
            x = x + d * (sigma_down - s)
        else:
            t, t_old, t_next, t_prev = -np.log(s), -np.log(old_sigma_down), -np.log(sigma_down), -np.log(float(sig[i - 1]))
            h = t_next - t
            c2 = (t_prev - t_old) / h
            phi1 = np.expm1(-h) / (-h)
            phi2 = (phi1 - 1.0) / (-h)
            b1, b2 = phi1 - phi2 / c2, phi2 / c2
            x = np.exp(-h) * x + h * (b1 * denoised + b2 * old_denoised)
        old_denoised, old_sigma_down = denoised, sigma_down
        x = x.astype(np.float32)
    return x


def main():
    out = sys.argv[sys.argv.index("--out") + 1] if "--out" in sys.argv else os.path.join(here, "../data/gen")
    os.makedirs(out, exist_ok=True)
    tensors, meta = {}, {}
    for variant in ("torch", "scalar"):
        r = noise(variant)
        meta[f"capability_{variant}"] = r["capability"]
        for (seed, n), vals in zip(CASES, r["data"]):
            tensors[f"{variant}_{seed}_{n}"] = np.asarray(vals, dtype=np.float32)
    if meta["capability_torch"] != "AVX2":
        sys.exit(f"this torch dispatches to {meta['capability_torch']}, not AVX2: the default-variant golden needs an AVX2 build on x86")
    st.write(os.path.join(out, "noise.safetensors"), tensors, metadata=meta)
    rng = np.random.default_rng(5)
    x0 = rng.standard_normal(64).astype(np.float32)
    res = {"x0": x0.tolist(), "cases": []}
    for steps, shift in ((8, 3.0), (30, 6.0), (3, 1.0), (1, 3.0)):
        sig = sigmas(steps, shift)
        res["cases"].append({"steps": steps, "shift": shift, "sigmas": sig.tolist(),
                             "euler": euler(x0.copy(), sig).tolist(), "res_multistep": res_multistep(x0.copy(), sig).tolist()})
    with open(os.path.join(out, "sampler.json"), "w") as f:
        json.dump(res, f)
    print(f"wrote {out}/noise.safetensors ({len(tensors)} tensors) and {out}/sampler.json")


if __name__ == "__main__":
    main()
