"""Does the non-IID calibration transfer? The simulated population vs the real clients, and the fit rules.

1. At theta_start (same model, same C, same candidate step): DGC's statistic of the simulated population's honest
   updates (quantiles), of each real client's first stream batch, and of a simulated client given that real client's
   exact label proportions (does the simulated law reproduce the real clients?).
2. From a finished grid cell pair (clean and poisoned DGC runs of one setting): the statistic per block of 10 rounds,
   simulated vs real, and the honest FPR / attacker recall that each fit rule (pooled with slope, 10-round envelope)
   would give on the logged real statistic (offline: the trajectory of the run is the one its own rule produced).

    .venv/bin/python benchmarks/calibration_transfer.py CELLS_DIR SETTING
    .venv/bin/python benchmarks/calibration_transfer.py /work/runs/grid/cells dir0.1-n10

Needs the cells' burn-in in the cache ($FL_MDISC_CACHE) and the data ($FL_MDISC_DATA). About a minute on 2 cores.
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from clients.honest import batch_tensors  # noqa: E402
from fl_mdisc.burnin import ensure_burnin  # noqa: E402
from fl_mdisc.calibration import _norm, _Sim, fit_threshold  # noqa: E402
from fl_mdisc.data import stream_batch  # noqa: E402
from fl_mdisc.experiment import make_plan  # noqa: E402
from fl_mdisc.models import get_params, set_params  # noqa: E402
from fl_mdisc.train import local_sgd  # noqa: E402


def main(cells: Path, setting: str) -> None:
    from omegaconf import OmegaConf

    torch.set_num_threads(2)
    clean, poisoned = cells / f"{setting}-clean-dgc-s0", cells / f"{setting}-poisoned-dgc-s0"
    cfg = OmegaConf.load(clean / "config.yaml")
    entry = ensure_burnin(cfg)
    fit = json.loads(Path(json.loads((clean / "calibration.json").read_text())["server_fit"]["path"]).read_text())
    C, eta = float(fit["clip_norm"]), float(cfg.fed.server_lr)
    sim = _Sim(cfg, entry)
    th = sim.start
    base = sim.probe([th])[0]

    def stat(u):
        f = min(1.0, C / _norm(u))
        return sim.probe([[(t + eta * f * a).astype(t.dtype) for t, a in zip(th, u)]])[0] - base

    print(f"1. at theta_start (C = {C:.3f}, eta = {eta})")
    if sim.skew is not None:
        s = np.array([stat(sim.update(th, 1, k)) for k in range(sim.population)])
        print(f"   simulated population ({sim.population}): q10/q50/q90/q98 = {np.quantile(s, [.1, .5, .9, .98]).round(3)}")
    plan = make_plan(cfg)
    for pid in range(int(cfg.fed.num_clients) - int(cfg.fed.num_malicious)):
        idx = stream_batch(plan.partitions[pid], int(cfg.fed.batch_size), int(cfg.seed), pid, 0)
        x, y = batch_tensors(cfg, plan, idx, 1, pid)
        set_params(sim.model, th)
        local_sgd(sim.model, x, y, float(cfg.fed.client_lr), int(cfg.fed.local_steps))
        real = stat([a.astype(np.float64) - b.astype(np.float64) for a, b in zip(get_params(sim.model), th)])
        line = f"   real client {pid}: {real:.3f}"
        if sim.skew is not None:
            h = np.bincount(plan.ds.y_train[plan.partitions[pid]], minlength=10).astype(float)
            sim.skew[0], sim.sizes[0] = h / h.sum(), len(plan.partitions[pid])
            line += f", simulated twin {stat(sim.update(th, 1, 0)):.3f} (top class {h.max() / h.sum():.2f})"
        print(line)
    steps, vals = np.asarray(fit["values"]["steps"]), np.asarray(fit["values"]["stat"])
    print("2. statistic median per block of 10 rounds: simulated | real (clean run)")
    rows = [json.loads(x) for x in open(clean / "rounds.jsonl")]
    for a in range(0, int(steps.max()) + 1, 10):
        r = [c["stat"] for row in rows[a:a + 10] for c in row["clients"] if "stat" in c]
        print(f"   rounds {a + 1}-{a + 10}: {np.median(vals[(steps >= a) & (steps < a + 10)]):.3f} | "
              f"{np.median(r) if r else float('nan'):.3f}")
    for name, w in (("pooled + slope", None), ("10-round envelope", 10)):
        mu, tau = fit_threshold(steps, vals, float(fit["target_fpr"]), w)
        out = []
        for run in (clean, poisoned):
            rr = [json.loads(x) for x in open(run / "rounds.jsonl")]
            fl = [(c["stat"] > mu + tau * (row["round"] - 1), bool(c.get("malicious"))) for row in rr
                  if row.get("phase") != "trigger" for c in row["clients"] if "stat" in c]
            hon = [f for f, m in fl if not m]
            mal = [f for f, m in fl if m]
            out.append((np.mean(hon), np.mean(mal) if mal else None))
        print(f"   {name}: mu = {mu:.3f}, tau = {tau:.5f}; honest FPR clean {out[0][0]:.3f}, poisoned {out[1][0]:.3f}, "
              f"recall {out[1][1]:.3f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
