"""How much does the federated trigger round cost at a given trigger scale? (the calibration of calib.trigger_scale)

Runs R poisoned rounds (lambda-update attacker, federated protocol, CPU preset, seed 0) in-process with the same
client functions and strategy chain as a simulation (no Flower transport), then, from that one state (global model
and server momentum), applies one trigger round per (trigger scale, strategy) and prints the accuracy change.

    .venv/bin/python benchmarks/trigger_scale.py [R=30] [scales=0.01,0.5,1,2] [state strategies=st]

Takes about 3 minutes for R=30 on 2 cores. Data and cache: $FL_MDISC_DATA and ./.cache/fl-mdisc (or
$FL_MDISC_CACHE).
"""
import copy
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from clients.honest import train_honest  # noqa: E402
from clients.malicious import train_malicious  # noqa: E402
from app.bench import _fake_reply, _prime  # noqa: E402
from fl_mdisc.burnin import ensure_burnin, load_model  # noqa: E402
from fl_mdisc.calibration import apply_calibration  # noqa: E402
from fl_mdisc.config import compose, resolve_paths, to_json  # noqa: E402
from fl_mdisc.data import to_float  # noqa: E402
from fl_mdisc.experiment import make_plan  # noqa: E402
from fl_mdisc.md import ProbeMD  # noqa: E402
from fl_mdisc.models import get_params, set_params  # noqa: E402
from fl_mdisc.train import evaluate  # noqa: E402
from strategies.factory import build_strategy  # noqa: E402

R = int(sys.argv[1]) if len(sys.argv) > 1 else 30
scales = [float(s) for s in sys.argv[2].split(",")] if len(sys.argv) > 2 else [0.01, 0.5, 2.0]
run_strats = sys.argv[3].split(",") if len(sys.argv) > 3 else ["st"]
base = ["preset=cpu", "protocol=federated", "attack=lambda_update", "seed=0"]
if os.environ.get("FL_MDISC_CACHE"):
    base.append(f"cache_dir={os.environ['FL_MDISC_CACHE']}")

def build(strat, extra=()):
    cfg = compose(base + [f"strategy={strat}", *extra]); resolve_paths(cfg)
    entry = ensure_burnin(cfg, log=lambda m: None)
    apply_calibration(cfg, entry, log=lambda m: None)
    plan = make_plan(cfg)
    pm = sh = None
    if cfg.strategy.name == "dgc":
        hist = load_model(cfg, entry["hist"], entry["hist_sha"])
        px = to_float(plan.ds.x_train[plan.split.probe[: int(cfg.strategy.probe_size)]])
        pm = ProbeMD(load_model(cfg, entry["start"], entry["start_sha"]), px, get_params(hist)); sh = pm.set_hist
    s, clip, _ = build_strategy(cfg, probe_md=pm, set_hist=sh)
    return cfg, entry, plan, s, clip

def round_(cfg, entry, plan, strategy, arrays, rnd, phase):
    cj = to_json(cfg)
    c = {"start-path": entry["start"], "start-sha": entry["start_sha"], "hist-path": entry["hist"], "hist-sha": entry["hist_sha"],
         "dsc-mu": 0.0, "dsc-tau": 0.0, "phase": phase, "server-round": rnd}
    reps = []
    for pid in range(int(cfg.fed.num_clients)):
        fn = train_malicious if pid in plan.malicious else train_honest
        new, met = fn(cj, arrays, c, pid); reps.append(_fake_reply(new, met, pid))
    torch.set_num_threads(2); _prime(strategy, arrays)
    agg, _ = strategy.aggregate_train(rnd, reps)
    return agg.to_numpy_ndarrays(), getattr(strategy, "momentum_vector", None)

def acc(cfg, entry, plan, arrays):
    m = load_model(cfg, entry["start"], entry["start_sha"]); set_params(m, arrays)
    return evaluate(m, plan.ds.x_test, plan.ds.y_test)[0]

for rs in run_strats:
    cfg, entry, plan, s, clip = build(rs)
    arrays = get_params(load_model(cfg, entry["start"], entry["start_sha"]))
    t0 = time.time()
    for rnd in range(1, R + 1):
        arrays, mom = round_(cfg, entry, plan, s, arrays, rnd, "accumulate")
    a0 = acc(cfg, entry, plan, arrays)
    print(f"[{rs}] after {R} rounds: {a0:.2f}  ({time.time()-t0:.0f}s)", flush=True)
    for sc in scales:
        row = []
        for ts in ["st", "gc", "dgc", "dgc_scale"]:
            cfg2, entry2, plan2, s2, clip2 = build(ts, [f"attack.trigger_scale={sc}"])
            s2.momentum_vector = copy.deepcopy(s.momentum_vector)
            a, _ = round_(cfg2, entry2, plan2, s2, [x.copy() for x in arrays], R + 1, "trigger")
            info = ""
            if clip2 is not None:
                e = [x for x in clip2.client_log if x["partition-id"] == 4][0]
                info = f" norm={e['norm']:.2f} f={e['factor']:.3f} md={e.get('md', 0):.2f}"
            row.append(f"{ts}:{acc(cfg2, entry2, plan2, a) - a0:+.2f}{info}")
        print(f"[{rs}] scale {sc}: " + " | ".join(row), flush=True)
