"""Compare DGC statistics on the logs of a finished federated Table 13 sweep (one burn-in per seed).

The DGC cells log, for every update, MD of the candidate (``md``) and MD of theta_t (``md_base``), so the three
statistics can be scored on the same updates: ``increase`` (what the run used), ``absolute`` and ``cohort`` (z > 3).
For ``absolute`` and ``increase`` the threshold is the one the server's self-calibration fits for that seed's
burn-in (fl_mdisc/calibration.py, cached). Also printed: the slope of the honest statistic over the real run
against the slope the calibration fitted on its shorter simulated run: a statistic "transfers" when they agree.

    .venv/bin/python benchmarks/dgc_statistic_from_runs.py TABLE_DIR [out.json]

Only the DGC cells are read; the flags of ``absolute``/``cohort`` are what those rules *would* have flagged on the
DGC trajectory (the trajectory itself is the one the run's own statistic produced).
"""
import json
import sys
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fl_mdisc.burnin import ensure_burnin  # noqa: E402
from fl_mdisc.calibration import calibrate  # noqa: E402
from fl_mdisc.md import auroc  # noqa: E402

table = Path(sys.argv[1])
out_path = Path(sys.argv[2]) if len(sys.argv) > 2 else table / "dgc_statistics.json"


def rows(p):
    return [json.loads(x) for x in open(p) if x.strip()]


def scores(recs, stat):
    if stat == "absolute":
        return [r["md"] for r in recs]
    if stat == "increase":
        return [r["md"] - r["md_base"] for r in recs]
    out = [0.0] * len(recs)
    by = {}
    for i, r in enumerate(recs):
        by.setdefault(r["round"], []).append(i)
    for idx in by.values():
        a = np.array([recs[i]["md"] for i in idx])
        med = np.median(a)
        mad = 1.4826 * np.median(np.abs(a - med))
        for i, m in zip(idx, a):
            out[i] = 0.0 if mad <= 0 else float((m - med) / mad)
    return out


result = {"table": str(table), "cells": []}
for cell in sorted((table / "cells").glob("federated-*-dgc-s*")):
    cfg = OmegaConf.load(cell / "config.yaml")
    recs = [dict(c, round=r["round"]) for r in rows(cell / "rounds.jsonl") if r["phase"] == "accumulate"
            for c in r["clients"] if "md_base" in c]
    if not recs:
        continue
    entry = ensure_burnin(cfg, log=lambda m: None)
    thr = {}
    for stat in ("absolute", "increase"):
        c = OmegaConf.create(OmegaConf.to_container(cfg))
        c.strategy.statistic = stat
        c.strategy.clip_norm = None  # the calibration key of a run that asked for its own C
        fit = calibrate(c, entry, log=lambda m: None)
        thr[stat] = (fit["mu"], fit["tau"])
    thr["cohort"] = (3.0, 0.0)
    row = {"cell": cell.name, "seed": int(cfg.seed), "scenario": "clean" if cfg.attack.name == "none" else "poisoned"}
    for stat, (mu, tau) in thr.items():
        s = np.array(scores(recs, stat))
        t = np.array([r["round"] - 1 for r in recs])
        mal = np.array([bool(r.get("malicious")) and cfg.attack.name != "none" for r in recs])
        flag = s > mu + tau * t
        fp, tp = int((flag & ~mal).sum()), int((flag & mal).sum())
        d = {"mu": mu, "tau": tau, "honest_fpr": round(fp / max(1, (~mal).sum()), 4),
             "honest_slope_real": round(float(np.polyfit(t[~mal], s[~mal], 1)[0]), 6)}
        if mal.any():
            d.update({"recall": round(tp / mal.sum(), 4), "precision": round(tp / (tp + fp), 4) if tp + fp else None,
                      "auroc": round(auroc(s[mal], s[~mal]), 4)})
        row[stat] = d
    result["cells"].append(row)
    print(json.dumps(row), flush=True)

lines = ["| seed | scenario | statistic | μ | τ (fitted) | honest slope (real run) | honest FPR | recall | precision | AUROC |",
         "|---|---|---|---|---|---|---|---|---|---|"]
for r in result["cells"]:
    for stat in ("increase", "absolute", "cohort"):
        d = r[stat]
        f = lambda v, n=4: "–" if v is None else f"{v:.{n}f}"  # noqa: E731
        lines.append(f"| {r['seed']} | {r['scenario']} | {stat} | {f(d['mu'])} | {f(d['tau'], 5)} | "
                     f"{f(d['honest_slope_real'], 5)} | {f(d['honest_fpr'], 3)} | {f(d.get('recall'), 3)} | "
                     f"{f(d.get('precision'), 3)} | {f(d.get('auroc'), 3)} |")
result["markdown"] = "\n".join(lines)
out_path.parent.mkdir(parents=True, exist_ok=True)
out_path.write_text(json.dumps(result, indent=1))
out_path.with_suffix(".md").write_text(result["markdown"] + "\n")
print(result["markdown"])
