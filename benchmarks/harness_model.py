"""Which model makes the harness protocol behave like the paper's? (a measurement behind the harness preset)

Runs the official federated harness (one participant per round, server SGD) in-process with the same client
functions and strategy chain as a simulation (no Flower transport): first R_clean clean rounds (an honest client)
to measure the honest update norm (the clip bound C = its median over rounds 1-10) and the clean accuracy, then, for
each attacker lambda and strategy, R poisoned rounds; prints test accuracy every `every` rounds, the attacker's
update norm and its ratio to C (GC only acts when the ratio exceeds 1).

    .venv/bin/python benchmarks/harness_model.py R lams strategies [hydra overrides...]
    .venv/bin/python benchmarks/harness_model.py 100 0.08,0.5 st,gc model=resnet18 model.width=16 harness.server_lr=0.1

Data and cache: $FL_MDISC_DATA and ./.cache/fl-mdisc (or $FL_MDISC_CACHE). The burn-in runs first if not cached.
"""
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
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

R = int(sys.argv[1])
lams = [float(x) for x in sys.argv[2].split(",")]
strats = sys.argv[3].split(",")
extra = sys.argv[4:]
every = int(os.environ.get("EVERY", "20"))
base = ([] if any(e.startswith("preset=") for e in extra) else ["preset=cpu"]) + ["protocol=harness", "seed=0", *extra]
if os.environ.get("FL_MDISC_CACHE"):
    base.append(f"cache_dir={os.environ['FL_MDISC_CACHE']}")


def build(over):
    cfg = compose(base + over)
    resolve_paths(cfg)
    entry = ensure_burnin(cfg, log=lambda m: print("  burn-in:", m, flush=True))
    apply_calibration(cfg, entry, log=lambda m: print("  ", m, flush=True))
    plan = make_plan(cfg)
    pm = None
    if cfg.strategy.name == "dgc":
        hist = load_model(cfg, entry["hist"], entry["hist_sha"])
        px = to_float(plan.ds.x_train[plan.split.probe[: int(cfg.strategy.probe_size)]])
        pm = ProbeMD(load_model(cfg, entry["start"], entry["start_sha"]), px, get_params(hist))
    s, clip, _ = build_strategy(cfg, probe_md=pm)
    return cfg, entry, plan, s, clip


def acc(cfg, entry, plan, arrays):
    m = load_model(cfg, entry["start"], entry["start_sha"])
    set_params(m, arrays)
    return evaluate(m, plan.ds.x_test, plan.ds.y_test)[0]


def run(over, rounds):
    cfg, entry, plan, s, clip = build(over)
    cj = to_json(cfg)
    arrays = get_params(load_model(cfg, entry["start"], entry["start_sha"]))
    c = {"start-path": entry["start"], "start-sha": entry["start_sha"], "hist-path": entry["hist"],
         "hist-sha": entry["hist_sha"], "dsc-mu": 0.0, "dsc-tau": 0.0, "phase": "accumulate"}
    norms, accs, t0 = [], [(0, acc(cfg, entry, plan, arrays))], time.time()
    for rnd in range(1, rounds + 1):
        fn = train_malicious if plan.malicious else train_honest
        new, met = fn(cj, arrays, {**c, "server-round": rnd}, 0)
        norms.append(float(np.sqrt(sum(((n - a) ** 2).sum() for n, a in zip(new, arrays)))))
        torch.set_num_threads(2)
        _prime(s, arrays)
        agg, _ = s.aggregate_train(rnd, [_fake_reply(new, met, 0)])
        arrays = agg.to_numpy_ndarrays()
        if rnd % every == 0:
            accs.append((rnd, acc(cfg, entry, plan, arrays)))
    return cfg, norms, accs, time.time() - t0


cfg, norms, accs, dt = run(["attack=none", "strategy=st"], max(R, 10))
C = statistics.median(norms[:10])
print(f"model={cfg.model.name} width={cfg.model.get('width')} server_lr={cfg.fed.server_lr}: clean ST "
      + " ".join(f"{r}:{a:.1f}" for r, a in accs) + f"  honest norm median(1-10)={C:.3f}  ({dt:.0f}s)", flush=True)
for st in [x for x in strats if x != "st"] if os.environ.get("CLEAN_ALL") else []:  # clean rows of the others too
    _, _, accs_c, dt = run(["attack=none", f"strategy={st}"], R)
    print(f"clean {st}: " + " ".join(f"{r}:{a:.1f}" for r, a in accs_c) + f"  ({dt:.0f}s)", flush=True)
for lam in lams:
    for st in strats:
        over = ["attack=lambda_update", f"strategy={st}", f"harness.lam={lam}"]
        if st != "st" and not any(o.startswith("harness.clip_norm=") for o in extra):
            over.append(f"harness.clip_norm={C}")
        cfg, norms, accs, dt = run(over, R)
        q = [norms[i] for i in (0, 4, 9, 29, R - 1) if i < len(norms)]
        print(f"lam={lam} {st}: " + " ".join(f"{r}:{a:.1f}" for r, a in accs)
              + "  attacker norm/C at rounds 1,5,10,30,R: " + " ".join(f"{n / C:.2f}" for n in q)
              + f"  ({dt:.0f}s)", flush=True)
