"""Does the self-calibration hold on another machine? Federated Table 13 cells in-process, without Flower or Ray.

The same client functions (clients/honest.py, clients/malicious.py), the same burn-in, calibration and DGC maths
(fl_mdisc/calibration.py, strategies/clipping.py, fl_mdisc/md.py ProbeMD) as a simulation, with the server chain
ServerSGD(FedAvg([GC|DGC](updates))) written out in a loop (every reply has num-examples = B, so FedAvg is the
mean). Needs only torch, numpy, hydra-core/omegaconf: it runs where flwr and Ray are not installed (a GPU box),
which is the point: a burn-in on another machine (other CPU kernels, or a GPU) and the calibration computed there.

    .venv/bin/python benchmarks/other_machine.py SEEDS R OUT.json [hydra overrides...]
    .venv/bin/python benchmarks/other_machine.py 0,1 100 other.json device=cuda

Prints, per seed and cell (clean/poisoned x ST/GC/DGC): mean test accuracy over the evaluations (every 10
rounds), and for DGC the honest flag rate, recall and precision of `flagged` against the malicious client.

Environment: ``ATTACKS`` (``none,lambda_update``) and ``STRATS`` (``st,gc,dgc_paper``) pick the cells;
``EVAL_EVERY`` (10, what every committed output used) the evaluation period, so that a toy run of a few rounds
(tests/test_benchmarks.py) evaluates at all.
"""
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from clients.honest import train_honest  # noqa: E402
from clients.malicious import train_malicious  # noqa: E402
from fl_mdisc.burnin import ensure_burnin, load_model  # noqa: E402
from fl_mdisc.calibration import apply_calibration  # noqa: E402
from fl_mdisc.config import compose, resolve_paths, to_json  # noqa: E402
from fl_mdisc.data import to_float  # noqa: E402
from fl_mdisc.experiment import make_plan  # noqa: E402
from fl_mdisc.md import ProbeMD  # noqa: E402
from fl_mdisc.models import get_params, set_params  # noqa: E402
from fl_mdisc.train import evaluate, pick_device  # noqa: E402
from strategies.clipping import apply_factor, dgc_factor, gc_factor, update_norm, update_of  # noqa: E402

seeds = [int(s) for s in sys.argv[1].split(",")]
R = int(sys.argv[2])
out_path = Path(sys.argv[3])
extra = sys.argv[4:]
EVERY = int(os.environ.get("EVAL_EVERY", "10"))


def cell(seed, strategy, attack):
    cfg = compose(["preset=cpu", "protocol=federated", f"seed={seed}", f"strategy={strategy}", f"attack={attack}",
                   *extra])
    resolve_paths(cfg)
    dev = pick_device(cfg)
    torch.set_num_threads(int(cfg.server_threads))
    entry = ensure_burnin(cfg, log=lambda m: print("  ", m, flush=True))
    fit = apply_calibration(cfg, entry, log=lambda m: print("  ", m, flush=True), device=dev)
    plan = make_plan(cfg)
    s = cfg.strategy
    probe = None
    if s.name == "dgc":
        px = to_float(plan.ds.x_train[plan.split.probe[: int(s.probe_size)]]).to(dev)
        probe = ProbeMD(load_model(cfg, entry["start"], entry["start_sha"], dev), px,
                        get_params(load_model(cfg, entry["hist"], entry["hist_sha"], dev)))
    cj = to_json(cfg)
    ev = load_model(cfg, entry["start"], entry["start_sha"], dev)
    theta = get_params(ev)
    conf = {"start-path": entry["start"], "start-sha": entry["start_sha"], "hist-path": entry["hist"],
            "hist-sha": entry["hist_sha"], "dsc-mu": 0.0, "dsc-tau": 0.0, "phase": "accumulate"}
    lr, mom, v = float(cfg.fed.server_lr), float(cfg.fed.server_momentum), None
    accs, flags = [], []
    t0 = time.time()
    for rnd in range(1, R + 1):
        ups, mal = [], []
        for pid in range(int(cfg.fed.num_clients)):
            fn = train_malicious if pid in plan.malicious else train_honest
            new, _ = fn(cj, theta, {**conf, "server-round": rnd}, pid)
            ups.append(update_of(new, theta))
            mal.append(pid in plan.malicious)
        facs = [1.0] * len(ups)
        if s.name in ("gc", "dgc"):
            norms = [update_norm(u, s.norm) for u in ups]
            facs = [gc_factor(n, float(s.clip_norm)) for n in norms]
        if s.name == "dgc":
            P = float(s.mu) + float(s.tau) * (rnd - 1)
            cands = [apply_factor(theta, u, lr * f) for u, f in zip(ups, facs)]
            mds = probe(cands + [theta])
            base = mds.pop()
            stats = [m - base for m in mds]  # s_k = MD_k - MD(theta_t), as strategies/dgc.py
            facs = [dgc_factor(n, float(s.clip_norm), st, P, f, s.mode) for n, st, f in zip(norms, stats, facs)]
            flags += [(st > P, m) for st, m in zip(stats, mal)]
        agg = [np.mean([f * u[i] for f, u in zip(facs, ups)], axis=0) for i in range(len(theta))]
        d = [-a for a in agg]  # theta - mean(theta_k)
        v = d if v is None else [mom * a + b for a, b in zip(v, d)]
        theta = [np.asarray(t - lr * g, dtype=t.dtype) for t, g in zip(theta, v)]
        if not all(np.isfinite(t).all() for t in theta):
            accs += [10.0] * (R // EVERY - len(accs))
            break
        if rnd % EVERY == 0:
            set_params(ev, theta)
            accs.append(evaluate(ev, plan.ds.x_test, plan.ds.y_test, device=dev)[0])
    res = {"seed": seed, "strategy": strategy, "attack": attack, "accuracy": [round(a, 2) for a in accs],
           "mean_accuracy": round(float(np.mean(accs)), 2), "seconds": round(time.time() - t0, 1),
           "burnin": {k: entry["meta"][k] for k in ("hist_accuracy", "start_accuracy")}}
    if fit is not None:
        res["calibration"] = {k: fit.get(k) for k in ("clip_norm", "mu", "tau", "fpr_in_sample", "statistic")}
    if flags:
        hon = [f for f, m in flags if not m]
        tp = sum(f for f, m in flags if m)
        fp = sum(hon)
        res["dgc"] = {"honest_flagged": round(fp / len(hon), 4),
                      "recall": round(tp / max(1, sum(m for _f, m in flags)), 4) if any(m for _f, m in flags) else None,
                      "precision": round(tp / (tp + fp), 4) if tp + fp else None}
    print(json.dumps(res), flush=True)
    return res


doc = {"machine": {"platform": platform.platform(), "processor": platform.processor(), "torch": torch.__version__,
                   "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
       "rounds": R, "overrides": extra, "cells": []}
for seed in seeds:
    for attack in os.environ.get("ATTACKS", "none,lambda_update").split(","):
        for strategy in os.environ.get("STRATS", "st,gc,dgc_paper").split(","):
            doc["cells"].append(cell(seed, strategy, attack))
            out_path.parent.mkdir(parents=True, exist_ok=True)
            out_path.write_text(json.dumps(doc, indent=1))
