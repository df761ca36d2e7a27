"""Golden for tests/test_optim.c: torch.optim.AdamW (Debian's PyTorch) for 10 steps on three parameter
tensors with given gradients, global-norm clipping (torch.nn.utils.clip_grad_norm_) and a per-step
learning rate, so zlora's AdamW, clipping and bookkeeping are checked against the reference optimizer.
Usage: /usr/bin/python3 tests/ref/optim_ref.py [OUT.json]"""
import json, os, sys
import numpy as np
import torch

here = os.path.dirname(os.path.abspath(__file__))
out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "../data/train/adamw.json")
rng = np.random.default_rng(3)
shapes = [(4, 6), (5,), (3, 2)]
params = [rng.standard_normal(s).astype(np.float32) for s in shapes]
steps = 10
grads = [[(rng.standard_normal(s) * (3.0 if k % 3 == 0 else 0.2)).astype(np.float32) for s in shapes] for k in range(steps)]
lrs = [1e-2 * (k + 1) / 4 if k < 4 else 1e-2 for k in range(steps)]
max_norm = 1.0
tp = [torch.nn.Parameter(torch.tensor(p)) for p in params]
opt = torch.optim.AdamW(tp, lr=lrs[0], betas=(0.9, 0.99), eps=1e-8, weight_decay=0.05)
norms = []
for k in range(steps):
    for p, g in zip(tp, grads[k]):
        p.grad = torch.tensor(g)
    norms.append(float(torch.nn.utils.clip_grad_norm_(tp, max_norm)))
    for group in opt.param_groups:
        group["lr"] = lrs[k]
    opt.step()
res = {"betas": [0.9, 0.99], "eps": 1e-8, "weight_decay": 0.05, "max_norm": max_norm, "lrs": lrs,
       "shapes": shapes, "params": [p.ravel().tolist() for p in params],
       "grads": [[g.ravel().tolist() for g in gs] for gs in grads],
       "norms": norms, "final": [p.detach().numpy().ravel().tolist() for p in tp]}
os.makedirs(os.path.dirname(out), exist_ok=True)
with open(out, "w") as f:
    json.dump(res, f)
print("wrote", out)
