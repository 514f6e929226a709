"""DGC probe passes: one forward per candidate model (as strategies/dgc.py does) vs one torch.func.vmap call over
the stacked candidates' parameters. Prints the max logit difference and 3 interleaved timings.

    .venv/bin/python benchmarks/dgc_probe_vmap.py [small_cnn|resnet18]
"""
import time

import numpy as np
import torch

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from torch.func import functional_call  # noqa: E402
from fl_mdisc.config import compose  # noqa: E402
from fl_mdisc.models import build_model, get_params, set_params  # noqa: E402
torch.set_num_threads(2)
name = sys.argv[1] if len(sys.argv) > 1 else "small_cnn"
cfg = compose([f"model={name}"])
m = build_model(cfg.model, cfg.dataset).eval()
x = torch.rand(500, 3, 32, 32)
p0 = get_params(m)
cands = [[a + np.float32(0.01) * np.random.randn(*a.shape).astype(a.dtype) if a.dtype.kind == "f" else a for a in p0] for _ in range(5)]
def loop():
    out = []
    with torch.no_grad():
        for c in cands:
            set_params(m, c); out.append(m(x))
    return torch.stack(out)
def vm():
    keys = [n for n, p in m.named_parameters() if p.requires_grad]
    with torch.no_grad():
        stacked = {k: torch.stack([torch.as_tensor(c[i]) for c in cands]) for i, k in enumerate(keys)}
        f = lambda sd, xx: functional_call(m, sd, (xx,))
        return torch.vmap(f, in_dims=(0, None))(stacked, x)
a, b = loop(), vm()
print("max diff", (a - b).abs().max().item())
for rep in range(3):
    t = time.perf_counter(); loop(); t1 = time.perf_counter() - t
    t = time.perf_counter(); vm(); t2 = time.perf_counter() - t
    print(f"loop {t1:.3f}s vmap {t2:.3f}s")
