"""What does the seed paper's MD constraint (Eq. 21, attack.beta) do to the poison? One batch, one model.

At theta_start of the CPU preset (seed 0 burn-in), with the attacker's trigger, validation and one clean batch of its
own partition, crafts the poison for each beta and form (``paper``: Eq. 21's beta * grad_theta L_MD in the bracket;
``input``: PGD ascends J - beta * MD(x~)) and prints: the batch's MD against theta* as it arrives (what DSC
thresholds), its MD after one SGD step on it (client lr 0.1), and the MD of 400 held-out clean images after that step
(how far the step moves the model from theta*).

    .venv/bin/python benchmarks/md_aware_poison.py [betas=0,0.05,0.1,0.2,1,5] [seeds=0] [batch=100] [hydra overrides...]

About a minute on 2 cores. Data: $FL_MDISC_DATA; cache: $FL_MDISC_CACHE (else ./.cache/fl-mdisc). Overrides pick
another preset or model (``preset=paper``: ResNet-18, on the GPU when there is one); ``seeds=0,1,2`` repeats the
measurement on each burn-in seed (each its own burn-in and attacker batches). The crafting constants are the
config's ``attack`` values; the one SGD step after the batch uses lr 0.1 in every preset. ``batch=B`` (100, what every
committed output used) sizes the clean batch and the trigger; the held-out images are 4B (a toy run on a small
partition: ``batch=20``).
"""
import copy
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fl_mdisc.attack import craft_poison, craft_trigger, second_order_term  # noqa: E402
from fl_mdisc.burnin import ensure_burnin, load_model  # noqa: E402
from fl_mdisc.config import compose, resolve_paths  # noqa: E402
from fl_mdisc.data import to_float  # noqa: E402
from fl_mdisc.experiment import make_plan  # noqa: E402
from fl_mdisc.md import md_from_logits  # noqa: E402
from fl_mdisc.train import local_sgd, pick_device  # noqa: E402


def main(betas: list[float], seed: int = 0, overrides: tuple[str, ...] = (), batch: int = 100) -> None:
    torch.set_num_threads(2)
    ov = list(overrides)
    cfg = compose((["preset=cpu"] if not any(o.startswith("preset=") for o in ov) else [])
                  + ov + ["attack=accumulative", f"seed={seed}"])
    resolve_paths(cfg)
    dev = pick_device(cfg)
    entry = ensure_burnin(cfg)
    meta = entry["meta"]
    print(f"preset {cfg.preset_name}, model {cfg.model.name}, seed {seed}, device {dev}: burn-in test accuracy "
          f"theta* {meta['hist_accuracy']:.2f} / theta_start {meta['start_accuracy']:.2f} ({meta['seconds']} s)")
    plan = make_plan(cfg)
    m = load_model(cfg, entry["start"], entry["start_sha"], dev)
    hist = load_model(cfg, entry["hist"], entry["hist_sha"], dev).eval()
    a = cfg.attack
    b = batch  # clean batch b, held-out 4b, trigger b
    idx = np.random.default_rng(seed).choice(plan.partitions[0], 6 * b, replace=False)
    x, y = to_float(plan.ds.x_train[idx[:b]]).to(dev), torch.as_tensor(plan.ds.y_train[idx[:b]]).to(dev)
    xv, yv = to_float(plan.ds.x_train[idx[b:5 * b]]).to(dev), torch.as_tensor(plan.ds.y_train[idx[b:5 * b]]).to(dev)
    xt, yt = to_float(plan.ds.x_train[idx[5 * b:]]).to(dev), torch.as_tensor(plan.ds.y_train[idx[5 * b:]]).to(dev)
    xt = craft_trigger(m, xt, yt, xv, yv)
    h = second_order_term(m, xt, yt, xv, yv)

    def md(model, xx):
        with torch.no_grad():
            model.eval()
            return float(md_from_logits(hist(xx), model(xx)).mean())

    print(f"clean batch MD at theta_start: {md(m, x):.4f}")
    print("form   beta   MD at arrival   MD after a step on it   clean MD after the step")
    for form in ("paper", "input"):
        for beta in betas:
            xp = craft_poison(m, x, y, h, a.eps, a.step_size, int(a.steps), float(a.gamma), beta=beta,
                              hist_model=hist, md_form=form)
            m2 = copy.deepcopy(m)
            local_sgd(m2, xp, y, 0.1, 1)
            print(f"{form:6s} {beta:5g}   {md(m, xp):13.4f}   {md(m2, xp):21.4f}   {md(m2, xv):23.4f}")


if __name__ == "__main__":
    args = sys.argv[1:]
    own = ("betas=", "seeds=", "batch=")
    kv = {k: v for k, v in (a.split("=", 1) for a in args if a.startswith(own))}
    rest = tuple(a for a in args if not a.startswith(own))
    if args and "=" not in args[0]:  # the earlier form: a bare list of betas
        kv["betas"], rest = args[0], tuple(a for a in args[1:] if not a.startswith(own))
    for s in kv.get("seeds", "0").split(","):
        main([float(b) for b in kv.get("betas", "0,0.05,0.1,0.2,1,5").split(",")], int(s), rest, int(kv.get("batch", 100)))
