"""Which stage of the attacked step is not reproducible on a GPU? (companion of benchmarks/cuda_determinism.py)

With :func:`fl_mdisc.train.pick_device`'s deterministic settings, computes each stage of one attacked step twice on the
same inputs and prints the largest |difference| between the two: the forward pass (train and eval mode), the
first-order parameter gradient, the second-order term h (double back-prop), the crafted poison batch, and the client
step. ``--no-tf32`` also turns TF32 off. Usage: ``python benchmarks/cuda_determinism_stages.py [--no-tf32]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    import torch

    from fl_mdisc.attack import craft_poison, param_grads, second_order_term
    from fl_mdisc.models import build_model
    from fl_mdisc.train import local_sgd, pick_device

    ap = argparse.ArgumentParser()
    ap.add_argument("--no-tf32", action="store_true")
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--channels-last", type=int, default=1)
    a = ap.parse_args()

    class Cfg:
        device = "cuda"

    dev = pick_device(Cfg())
    if a.no_tf32:
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    cifar = {"shape": [3, 32, 32], "num_classes": 10, "mean": [0.49, 0.48, 0.45], "std": [0.2, 0.2, 0.2]}
    torch.manual_seed(0)
    model = build_model({"name": "resnet18", "width": a.width, "channels_last": bool(a.channels_last)}, cifar).to(dev)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    xs, ys = torch.rand(300, 3, 32, 32, generator=g).to(dev), torch.randint(0, 10, (300,), generator=g).to(dev)
    x, y, xt, yt, xv, yv = xs[:100], ys[:100], xs[100:200], ys[100:200], xs[200:], ys[200:]

    def flat(ts):
        return torch.cat([t.detach().reshape(-1).double() for t in ts])

    stages = {
        "forward_train": lambda: (model.train(), model(x))[1].reshape(1, -1),
        "forward_eval": lambda: (model.eval(), model(x))[1].reshape(1, -1),
        "grad": lambda: flat(param_grads(model, x, y)),
        "h_second_order": lambda: flat(second_order_term(model, xt, yt, xv, yv)),
        "poison": lambda: craft_poison(model, x, y, second_order_term(model, xt, yt, xv, yv), 0.2, 0.2, 2, 1.0),
        "client_step": lambda: (local_sgd(model, x, y, 1.0, 1), flat(model.parameters()))[1],
    }
    def fresh_step():  # a new model object per repeat (new allocations), one full attacked step as in the trajectory
        torch.manual_seed(0)
        m = build_model({"name": "resnet18", "width": a.width, "channels_last": bool(a.channels_last)}, cifar).to(dev)
        h = second_order_term(m, xt, yt, xv, yv)
        xp = craft_poison(m, x, y, h, 0.2, 0.2, 2, 1.0)
        local_sgd(m, xp, y, 1.0, 1)
        return flat(m.parameters())

    stages["fresh_model_full_step"] = fresh_step
    out = {}
    for name, fn in stages.items():
        vals = []
        for _ in range(2):
            model.load_state_dict(state)
            torch.manual_seed(1)
            vals.append(fn().detach().double())
        out[name] = float((vals[0] - vals[1]).abs().max())
    print(json.dumps({"tf32": not a.no_tf32, "channels_last": bool(a.channels_last), "max_abs_diff": out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
