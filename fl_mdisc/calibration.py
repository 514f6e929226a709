"""Self-calibration of the server defences: GC's bound C and DGC's threshold, computed where the run happens.

Why: the burn-in differs across machines (CPU kernels round differently), so any C, mu or tau fitted to one
machine's checkpoints is wrong on the next one (a threshold fitted on one machine flagged most honest updates on
another: docs/history.md). The paper prescribes this for DSC's threshold ("estimated from clean data in the
burn-in phase", Sec. 4.1; :func:`fl_mdisc.burnin.estimate_dsc_threshold`); we do the same for the server.

The rule. The server simulates a clean federation from theta_start with what it knows (:mod:`fl_mdisc.calib_sim`):

* C = median of ||Delta_k|| (in ``strategy.norm``: L2, or L-infinity) over rounds 1..10 (a 10-round pre-pass without
  clipping), as the hand-run calibration of DESIGN.md section 5.
* DGC's paper gate: over the simulated updates' statistic s_k = MD_k - MD(theta_t), the threshold P_t = mu + tau * t
  is fitted for a target false-positive rate alpha = ``strategy.target_fpr``: tau = least-squares slope of s over t (clipped at 0), mu = the order
  statistic of the detrended values s - tau * t with floor(alpha n) values above it, so that at most alpha of
  the n simulated honest updates lie above P_t (:func:`fit_fpr_threshold`).

Cache: ``<burn-in dir>/calibration-<key>.json``; the key holds every input that changes the result (the
burn-in checkpoints' SHA-256, split, protocol, statistic, probe size, alpha, R_c).
Explicit ``strategy.clip_norm`` / ``strategy.mu`` + ``strategy.tau`` override the rule.

The fitted threshold serves DGC's paper rule (``strategy.gate=paper``, Table 13); the default history gate
(:mod:`fl_mdisc.history`) needs no threshold, only C. Under non-IID data a threshold fitted on the simulated
population does not transfer to a fixed real federation (docs: history), which is why the history gate exists.

Differences from the paper: the paper publishes no DGC and no rule for C; this is our design.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .assumption import assumed_f
from .calib_sim import (calib_rounds, honest_per_round, measured_statistic, n_honest, probe_size, simulate,
                        simulated_population, statistic_values)
from .config import config_hash
from .data import burnin_size, load_for

__all__ = ["apply_calibration", "calibrate", "calibration_key", "fit_fpr_threshold", "n_honest", "honest_per_round",
           "simulated_population", "statistic_values", "simulate"]

FORMAT = 1


def fit_fpr_threshold(steps, values, target_fpr: float, slope: bool = True) -> tuple[float, float]:
    """(mu, tau) such that at most ``target_fpr`` of ``values`` lie above mu + tau * step.

    tau = least-squares slope of values over steps, clipped at 0 (0 when ``slope`` is false); mu = the smallest
    detrended value d_(n-k) (sorted ascending, 1-based) with k = floor(target_fpr * n) values strictly above it.
    """
    s = np.asarray(steps, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        raise ValueError("no calibration values")
    tau = 0.0
    if slope and len(s) >= 2 and np.ptp(s) > 0:
        tau = max(0.0, float(np.polyfit(s, v, 1)[0]))
    r = np.sort(v - tau * s)
    k = int(np.floor(float(target_fpr) * len(r) + 1e-9))  # this many values may lie above the threshold
    mu = float(r[len(r) - 1 - min(k, len(r) - 1)])
    return mu, tau


def calibration_key(cfg, entry: dict) -> dict:
    s, fed = cfg.strategy, cfg.fed
    return {
        "format": FORMAT, "start": entry["start_sha"], "hist": entry["hist_sha"],
        "split": {"burnin": burnin_size(cfg.split.burnin, len(load_for(cfg).y_train)), "probe": int(cfg.split.probe), "calib": int(cfg.split.calib or 0)},
        "protocol": cfg.protocol, "n_honest": n_honest(cfg), "B": int(fed.batch_size), "client_lr": float(fed.client_lr),
        "local_steps": int(fed.local_steps), "server_lr": float(fed.server_lr), "momentum": float(fed.server_momentum),
        "augment": bool(cfg.dataset.augment), "rounds": calib_rounds(cfg),
        "statistic": measured_statistic(cfg), "probe_size": int(probe_size(cfg)),
        "target_fpr": float(s.target_fpr) if measured_statistic(cfg) else None, "seed": int(cfg.burnin.seed),
        "assumed_f": assumed_f(cfg),
        "clip_norm": None if s.get("clip_norm") is None else float(s.clip_norm), "norm": str(s.norm),
    } | _federation_key(cfg)


def _federation_key(cfg) -> dict:
    """Key entries of the realistic-federation options, present only when they differ from full IID participation
    (so that the caches of earlier runs stay valid: their simulation is unchanged)."""
    from .sampling import clients_per_round

    fed, out = cfg.fed, {}
    if clients_per_round(cfg) != int(fed.num_clients):
        out["clients_per_round"] = clients_per_round(cfg)
        out["honest_per_round"] = honest_per_round(cfg)
    if str(fed.partition) != "iid":
        out["partition"] = str(fed.partition)
        out["skew"] = float(fed.dirichlet_alpha) if fed.partition == "dirichlet" else int(fed.get("classes_per_client") or 2)
        out["law"] = "partitioner-v2"  # label proportions and sizes from the real partitioner, many clients
        out["population"] = simulated_population(cfg)
        out["min_partition_size"] = fed.get("min_partition_size")
        out["attacker_data"] = str(fed.attacker_data)
    return out


def calibrate(cfg, entry: dict, log=print, device="cpu") -> dict:
    """C and (for DGC) the threshold for ``cfg`` (cached beside the burn-in). Returns the fit (no records)."""
    key = calibration_key(cfg, entry)
    path = Path(entry["dir"]) / f"calibration-{config_hash(key)}.json"
    if path.is_file():
        try:
            fit = json.loads(path.read_text())
            if fit.get("key") == key:
                log(f"calibration cache hit: {path}")
                return _with_threshold(fit, cfg)
        except ValueError:
            pass
    log(f"calibrating on a simulated clean federation ({key['n_honest']} honest clients, {key['rounds']} rounds)")
    sim = simulate(cfg, entry, log=log, device=device)
    recs = sim.pop("records")
    fit = {"key": key, **sim, "path": str(path)}
    if key["statistic"] is not None:
        stat = key["statistic"]
        steps, vals = statistic_values(recs)
        fit.update({"statistic": stat, "target_fpr": key["target_fpr"],
                    "values": {"steps": steps, "stat": [round(v, 8) for v in vals],
                               "norm": [round(r["norm"], 6) for r in recs]}})
        fit = _with_threshold(fit, cfg, vals)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(fit, indent=1))
    tmp.rename(path)
    msg = f"calibrated: C = {fit['clip_norm']:.4g}"
    if "mu" in fit:
        msg += f", DGC ({fit['statistic']}) P_t = {fit['mu']:.5g} + {fit['tau']:.3g} * t (in-sample FPR " \
               f"{fit['fpr_in_sample']:.3f}, target {fit['target_fpr']})"
    log(msg + f" [{fit['seconds']}s]")
    return fit


def _with_threshold(fit: dict, cfg, vals: list | None = None) -> dict:
    """Set mu, tau and the in-sample FPR of ``fit`` from its simulated values (``vals``, else the cached rounded
    ones): :func:`fit_fpr_threshold` on all values pooled."""
    stat = fit.get("statistic")
    if stat is None or "values" not in fit:
        return fit
    if vals is None and "mu" in fit:
        return fit
    steps = fit["values"]["steps"]
    vals = fit["values"]["stat"] if vals is None else vals
    mu, tau = fit_fpr_threshold(steps, vals, fit["target_fpr"])
    thr = mu + tau * np.asarray(steps, dtype=np.float64)
    return fit | {"mu": mu, "tau": tau, "fpr_in_sample": float(np.mean(np.asarray(vals) > thr))}


def apply_calibration(cfg, entry: dict, log=print, device="cpu") -> dict | None:
    """Fill the strategy's null C / mu / tau from :func:`calibrate`; explicit values stay unchanged.

    Returns the fit (or None when nothing had to be calibrated)."""
    s = cfg.strategy
    norm_based = s.name == "byzfl" and (s.aggregator == "cc" or "clipping" in list(s.pre))
    if s.name not in ("gc", "dgc") and not norm_based:  # ByzFL's cc radius / clipping bound: C, as GC's
        return None
    need_c = s.get("clip_norm") is None
    need_p = measured_statistic(cfg) is not None and (s.get("mu") is None or s.get("tau") is None)
    if not (need_c or need_p):
        return None
    fit = calibrate(cfg, entry, log=log, device=device)
    if need_c:
        s.clip_norm = float(fit["clip_norm"])
    if need_p:
        s.mu, s.tau = float(fit["mu"]), float(fit["tau"])
    return fit
