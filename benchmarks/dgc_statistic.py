"""Which DGC statistic transfers across burn-ins, and which attacker strength damages ST without collapsing it?

For each burn-in seed (run seed = burn-in seed, CPU preset, federated protocol, 4 honest + 1 attacker) this runs,
in-process with the same client functions and strategy chain as a simulation (no Flower transport):

* the server's self-calibration (fl_mdisc/calibration.py) for the statistics ``absolute`` and ``increase``;
* a clean run and, for each attacker strength k (``attack.norm_multiple``), a poisoned run, each under ST and
  under a logging DGC that never flags (= GC), which records for every update MD of the candidate and MD(theta_t);

then applies each calibrated threshold (and the cohort rule) to the logged real updates and prints the honest
false-positive rate (clean and poisoned), the attacker recall and precision, AUROC, and the mean accuracy of ST
and GC (evaluations every 10 rounds), clean vs poisoned.

    .venv/bin/python benchmarks/dgc_statistic.py R seeds ks [out.json]
    .venv/bin/python benchmarks/dgc_statistic.py 60 0,1 2,4 docs/results/calibration/dgc_statistic.json
"""
import json
import os
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
from fl_mdisc.calibration import calibrate, fit_fpr_threshold  # noqa: E402
from fl_mdisc.config import compose, resolve_paths, to_json  # noqa: E402
from fl_mdisc.data import to_float  # noqa: E402
from fl_mdisc.experiment import make_plan  # noqa: E402
from fl_mdisc.md import ProbeMD, auroc  # noqa: E402
from fl_mdisc.models import get_params, set_params  # noqa: E402
from fl_mdisc.train import evaluate  # noqa: E402
from strategies.factory import build_strategy  # noqa: E402

R = int(sys.argv[1])
seeds = [int(s) for s in sys.argv[2].split(",")]
ks = [float(k) for k in sys.argv[3].split(",")]
out_path = sys.argv[4] if len(sys.argv) > 4 else None
extra = sys.argv[5:]
torch.set_num_threads(2)


def base(seed):
    b = ["preset=cpu", "protocol=federated", f"seed={seed}", *extra]
    if os.environ.get("FL_MDISC_CACHE"):
        b.append(f"cache_dir={os.environ['FL_MDISC_CACHE']}")
    return b


def run(seed, over, rounds):
    cfg = compose(base(seed) + over)
    resolve_paths(cfg)
    entry = ensure_burnin(cfg, log=lambda m: print("  burn-in:", m, flush=True))
    if cfg.strategy.name == "dgc":
        cfg.strategy.mu, cfg.strategy.tau = 1e9, 0.0  # log only: never flag (GC's trajectory)
    if cfg.strategy.name in ("gc", "dgc") and cfg.strategy.clip_norm is None:
        cfg.strategy.clip_norm = calibrate(cfg, entry, log=lambda m: None)["clip_norm"]
    plan = make_plan(cfg)
    pm = sh = None
    if cfg.strategy.name == "dgc":
        hist = load_model(cfg, entry["hist"], entry["hist_sha"])
        px = to_float(plan.ds.x_train[plan.split.probe[: int(cfg.strategy.probe_size)]])
        pm = ProbeMD(load_model(cfg, entry["start"], entry["start_sha"]), px, get_params(hist))
        sh = pm.set_hist
    s, clip, _ = build_strategy(cfg, probe_md=pm, set_hist=sh)
    cj = to_json(cfg)
    arrays = get_params(load_model(cfg, entry["start"], entry["start_sha"]))
    ev = load_model(cfg, entry["start"], entry["start_sha"])
    conf = {"start-path": entry["start"], "start-sha": entry["start_sha"], "hist-path": entry["hist"],
            "hist-sha": entry["hist_sha"], "dsc-mu": 0.0, "dsc-tau": 0.0, "phase": "accumulate"}
    accs, logs, att_norms = [], [], []
    for rnd in range(1, rounds + 1):
        reps = []
        for pid in range(int(cfg.fed.num_clients)):
            fn = train_malicious if pid in plan.malicious else train_honest
            new, met = fn(cj, arrays, {**conf, "server-round": rnd}, pid)
            if pid in plan.malicious:
                att_norms.append(float(met.get("attack-norm", 0.0)))
            reps.append(_fake_reply(new, met, pid))
        torch.set_num_threads(2)
        _prime(s, arrays)
        agg, _ = s.aggregate_train(rnd, reps)
        if agg is None:  # every reply dropped (non-finite): the model diverged
            accs += [10.0] * (rounds // 10 - len(accs))
            print(f"  diverged at round {rnd}", flush=True)
            break
        arrays = agg.to_numpy_ndarrays()
        if clip is not None and hasattr(clip, "statistic"):
            for e in clip.client_log:
                logs.append({"round": rnd, "mal": e["partition-id"] in plan.malicious, "md": e["md"],
                             "md_base": e.get("md_base"), "norm": e["norm"]})
        if rnd % 10 == 0:
            set_params(ev, arrays)
            accs.append(evaluate(ev, plan.ds.x_test, plan.ds.y_test)[0])
    return cfg, entry, accs, logs, att_norms


def cohort(logs):
    by = {}
    for i, r in enumerate(logs):
        by.setdefault(r["round"], []).append(i)
    z = [0.0] * len(logs)
    for idx in by.values():
        a = np.array([logs[i]["md"] for i in idx])
        med = np.median(a)
        mad = 1.4826 * np.median(np.abs(a - med))
        for i, m in zip(idx, a):
            z[i] = 0.0 if mad <= 0 else float((m - med) / mad)
    return z


def score(logs, stat):
    if stat == "absolute":
        return [r["md"] for r in logs]
    if stat == "increase":
        return [r["md"] - r["md_base"] for r in logs]
    return cohort(logs)


def rates(logs, stat, mu, tau):
    s = score(logs, stat)
    fl = [v > mu + tau * (r["round"] - 1) for v, r in zip(s, logs)]
    hon = [f for f, r in zip(fl, logs) if not r["mal"]]
    mal = [f for f, r in zip(fl, logs) if r["mal"]]
    tp, fp = sum(mal), sum(hon)
    out = {"fpr": round(fp / max(1, len(hon)), 4)}
    if mal:
        out.update({"recall": round(tp / len(mal), 4), "precision": round(tp / (tp + fp), 4) if tp + fp else None,
                    "auroc": round(auroc([v for v, r in zip(s, logs) if r["mal"]],
                                         [v for v, r in zip(s, logs) if not r["mal"]]), 4)})
    return out


results = {"rounds": R, "seeds": seeds, "ks": ks, "per_seed": {}}
for seed in seeds:
    t0 = time.time()
    res = {}
    cal = {}
    for stat in ("absolute", "increase"):
        cfg = compose(base(seed) + ["strategy=dgc", f"strategy.statistic={stat}", "attack=none"])
        resolve_paths(cfg)
        entry = ensure_burnin(cfg, log=lambda m: print("  burn-in:", m, flush=True))
        fit = calibrate(cfg, entry, log=lambda m: print("  ", m, flush=True))
        cal[stat] = {k: fit[k] for k in ("clip_norm", "mu", "tau", "fpr_in_sample", "seconds")}
    cal["cohort"] = {"mu": 3.0, "tau": 0.0}
    res["calibration"] = cal
    res["burnin"] = {k: entry["meta"][k] for k in ("hist_accuracy", "start_accuracy")}
    print(f"seed {seed}: burn-in {res['burnin']}, calibration {cal}", flush=True)
    _, _, acc_st_clean, _, _ = run(seed, ["strategy=st", "attack=none"], R)
    _, _, acc_gc_clean, clean_logs, _ = run(seed, ["strategy=dgc", "attack=none"], R)
    res["clean"] = {"st": acc_st_clean, "gc": acc_gc_clean,
                    **{st: rates(clean_logs, st, cal[st]["mu"], cal[st]["tau"]) for st in cal}}
    print(f"seed {seed} clean: ST {np.mean(acc_st_clean):.2f} GC {np.mean(acc_gc_clean):.2f} "
          + " ".join(f"{st}:{res['clean'][st]}" for st in cal), flush=True)
    for k in ks:
        _, _, acc_st, _, norms_st = run(seed, ["strategy=st", "attack=lambda_update", f"attack.norm_multiple={k}"], R)
        _, _, acc_gc, logs, _ = run(seed, ["strategy=dgc", "attack=lambda_update", f"attack.norm_multiple={k}"], R)
        r = {"st": acc_st, "gc": acc_gc, "attacker_norm_first_last": [norms_st[0], norms_st[-1]],
             **{st: rates(logs, st, cal[st]["mu"], cal[st]["tau"]) for st in cal}}
        res[f"k={k}"] = r
        print(f"seed {seed} k={k}: ST {np.mean(acc_st):.2f} ({' '.join(f'{a:.1f}' for a in acc_st)}) "
              f"GC {np.mean(acc_gc):.2f} (ST loses {np.mean(acc_st_clean) - np.mean(acc_st):.2f}) "
              + " ".join(f"{st}:{r[st]}" for st in cal), flush=True)
    res["seconds"] = round(time.time() - t0)
    results["per_seed"][str(seed)] = res
    if out_path:
        Path(out_path).parent.mkdir(parents=True, exist_ok=True)
        Path(out_path).write_text(json.dumps(results, indent=1))
