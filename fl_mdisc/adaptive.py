"""The DGC-aware model-poisoning attacker (``attack=adaptive_update``; ours: no paper defines one).

A defence is judged by its strongest attacker (Tramer et al., NeurIPS 2020). The seed paper's adaptive attacker
(Table 3, :mod:`fl_mdisc.attack`'s ``beta``) is a data-poisoning one against DSC; this is its federated
counterpart against DGC (:mod:`strategies.dgc`): the lambda-update attacker of Pang's federated harness that knows
how DGC scores an update and keeps its own estimate of that score under a budget, trading damage for stealth.

Threat model. The attacker knows: the protocol (server lr eta, the GC/DGC rules, their statistic and their
calibration rule, the clients' batch size, lr and local steps, the federation's shape: N, K, the number of
attackers, the partition law), the global model theta_t it receives every round, the burn-in historical checkpoint
theta_hist that DGC measures against (every client receives it, as DSC needs it), and its
own clean data (its validation batch and stream). It does not know: the server's probe set, the server's calibration
set and therefore the exact C and P_t, the honest clients' data or updates.

What it computes. DGC's default statistic (``increase``) for an update Delta is

    s(Delta) = MD_P(theta_t + eta f(Delta) Delta) - MD_P(theta_t),
    MD_P(theta) = mean_{x in P} KL(softmax f(x; theta_hist) || softmax f(x; theta)),   f(Delta) = min(1, C / ||Delta||).

The attacker estimates it, s_hat, with its own clean validation images as P (the first ``attack.probe_size``).
Its budget is a multiple of *the calibrated honest level*: DGC's calibration rule is public
(:mod:`fl_mdisc.calibration`: simulate a clean federation of the announced shape from theta_start, C = the median
honest norm of its first 10 rounds, P_t = mu + tau t fitted so that at most ``target_fpr`` of the simulated honest
statistics lie above it), so the attacker runs that same rule with its own clean images (stream and validation batch) in place of the
server's calibration set and its own probe in place of the server's (:func:`attacker_calibration`, over the rounds
it attacks, cached beside the burn-in and prepared before the run starts). That gives its estimates C_hat and
P_hat_t of the server's C and P_t, with the server's own estimator; the budget in round t is

    b_t = ``attack.md_budget`` x max(P_hat_t, 1e-6)          (null: unaware, the plain lambda-update),

so md_budget = 1 aims at the threshold it believes DGC uses and md_budget < 1 keeps a safety margin below it. It
uses DGC's configuration when the run's strategy is DGC, else DGC's defaults (``conf/strategy/dgc.yaml``): the same
attacker in every strategy column of ``fl-mdisc adaptive``. (Its budget is a multiple of the threshold, not of its
honest updates' own level: the increase statistic of honest updates is centred near 0, and a multiple of a level
centred near 0 is no budget; docs/history.md has the first version that did that.)

Each round it builds the lambda-update exactly as ``attack=lambda_update`` does (direction, norm rule, stealth pause)
and sends c* Delta with

    c* = max { c in [0, 1] : s_hat(c Delta) <= b_t }      (bisection, ``attack.search_steps`` = 10 halvings),

the largest multiple of its update that its own estimate lets through; c* = 1 when the whole update already fits.
Bisection assumes s_hat(c Delta) grows with c (true for the small steps of one round in our measurements); the
final c is checked, and 0 (an empty update) is sent if even the smallest step exceeds the budget.
"""

from __future__ import annotations

import numpy as np
import torch

from .md import md_from_logits


@torch.no_grad()
def probe_md(model, params: list[torch.Tensor], probe_x: torch.Tensor, hist_logits: torch.Tensor) -> float:
    """MD_P of the model with ``params`` (written into ``model``; the caller restores them)."""
    for p, v in zip([p for p in model.parameters() if p.requires_grad], params):
        p.copy_(v)
    model.eval()
    return float(md_from_logits(hist_logits, model(probe_x)).mean())


def estimated_statistic(model, theta: list[torch.Tensor], delta: list[torch.Tensor], eta: float, clip_norm: float,
                        probe_x: torch.Tensor, hist_logits: torch.Tensor, base: float | None = None) -> float:
    """s_hat(Delta) = MD_P(theta + eta f Delta) - MD_P(theta), f = min(1, C / ||Delta||); ``model`` is left at
    ``theta``. ``base`` = MD_P(theta) when already known."""
    norm = float(torch.sqrt(sum((d.double() ** 2).sum() for d in delta)))
    f = 1.0 if norm <= clip_norm or norm == 0 else clip_norm / norm
    if base is None:
        base = probe_md(model, theta, probe_x, hist_logits)
    cand = probe_md(model, [t + eta * f * d for t, d in zip(theta, delta)], probe_x, hist_logits)
    probe_md(model, theta, probe_x, hist_logits)  # restore theta
    return cand - base


def largest_scale_within(stat, budget: float, steps: int = 10) -> tuple[float, float]:
    """(c*, stat(c*)): the largest c in [0, 1] with stat(c) <= budget, by bisection over ``steps`` halvings
    (c* = 1 when stat(1) <= budget; 0 when no tested c > 0 fits)."""
    full = stat(1.0)
    if full <= budget:
        return 1.0, full
    lo, hi, s_lo = 0.0, 1.0, None
    for _ in range(int(steps)):
        mid = 0.5 * (lo + hi)
        s = stat(mid)
        if s <= budget:
            lo, s_lo = mid, s
        else:
            hi = mid
    if s_lo is None:
        return 0.0, 0.0
    return lo, s_lo


def attacker_view(cfg):
    """The run's configuration as the DGC-aware attacker models it: the strategy is DGC (the run's own when it is DGC,
    else ``conf/strategy/dgc.yaml``) with the server's fitted values unknown (C, mu, tau null), its probe of
    ``attack.probe_size`` images, and the simulation limited to the rounds it attacks."""
    from omegaconf import OmegaConf

    from .config import conf_dir

    view = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    if view.strategy.name != "dgc":
        view.strategy = OmegaConf.load(conf_dir() / "strategy" / "dgc.yaml")
    view.strategy.clip_norm = view.strategy.mu = view.strategy.tau = None
    view.strategy.probe_size = int(cfg.attack.probe_size)
    view.strategy.calib_rounds = min(int(view.strategy.calib_rounds), int(cfg.num_rounds))
    return view


def attacker_calibration(cfg, entry: dict, pid: int, data, probe, log=print, device="cpu") -> dict:
    """The server's calibration rule (:func:`fl_mdisc.calibration.simulate` and :func:`fit_fpr_threshold`) run by attacker
    ``pid`` on its own clean images ``data`` with its own ``probe`` (image indices): {clip_norm, mu, tau, ...}.
    Cached as ``attacker-calibration-<key>.json`` beside the burn-in (the key: the server's calibration key of the
    attacker's view plus the attacker's image indices)."""
    import hashlib
    import json
    from pathlib import Path

    from .calibration import calibration_key, fit_fpr_threshold, simulate, statistic_values
    from .config import config_hash

    view = attacker_view(cfg)
    gate = str(view.strategy.gate)
    view.strategy.gate = "paper"  # the simulation measures the statistic of every simulated honest update
    data, probe = np.asarray(data, dtype=np.int64), np.asarray(probe, dtype=np.int64)
    key = calibration_key(view, entry) | {"gate": gate, 
        "attacker": int(pid), "data": hashlib.sha256(data.tobytes()).hexdigest()[:16],
        "probe": hashlib.sha256(probe.tobytes()).hexdigest()[:16]}
    path = Path(entry["dir"]) / f"attacker-calibration-{config_hash(key)}.json"
    if path.is_file():
        try:
            fit = json.loads(path.read_text())
            if fit.get("key") == key:
                return fit
        except ValueError:
            pass
    log(f"attacker {pid}: running DGC's calibration rule on its own {len(data)} images ({key['rounds']} rounds)")
    sim = simulate(view, entry, log=log, device=device, data=data, probe=probe)
    steps, vals = statistic_values(sim.pop("records"))
    fit = {"key": key, **sim, "statistic": key["statistic"], "gate": gate}
    if gate == "paper":
        mu, tau = fit_fpr_threshold(steps, vals, key["target_fpr"])
        fit |= {"mu": mu, "tau": tau, "target_fpr": key["target_fpr"]}
        said = f"P_hat_t = {mu:.4g} + {tau:.3g} * t"
    else:
        fit["levels"] = history_levels(steps, vals, view)
        said = f"history cut {min(fit['levels'].values()):.4g} .. {max(fit['levels'].values()):.4g}"
    tmp = path.with_suffix(f".{pid}.tmp")
    tmp.write_text(json.dumps(fit, indent=1))
    tmp.rename(path)
    log(f"attacker {pid}: C_hat = {fit['clip_norm']:.4g}, {said} [{fit['seconds']}s]")
    return fit


def history_levels(steps, vals, view) -> dict[str, float]:
    """The history gate's cut in the statistic's units, per simulated round t: the round's median plus kappa times the
    pooled robust scale of the last ``pool_rounds`` rounds (:class:`fl_mdisc.history.HistoryGate` with every client
    at its mean), i.e. the largest statistic a client with a clean history passes with."""
    from .history import HistoryGate

    gate = HistoryGate(alpha=1.0, pool_rounds=int(view.strategy.pool_rounds), kappa=float(view.strategy.kappa))
    steps, vals = np.asarray(steps), np.asarray(vals, dtype=np.float64)
    out = {}
    for t in sorted(set(int(x) for x in steps)):
        _z, med, sigma = gate.zscores(list(vals[steps == t]))
        out[str(t + 1)] = med + gate.kappa * sigma
    return out


def budget_at(fit: dict, md_budget: float, rnd: int) -> tuple[float, float]:
    """(b_t, its reference level): md_budget x max(level, 1e-6) of round ``rnd``; the level is P_hat_t = mu_hat +
    tau_hat t (t = rnd - 1, the paper gate) or the history gate's estimated cut of that round (the last simulated
    round's after the simulation ends)."""
    if "levels" in fit:
        rounds = sorted(int(r) for r in fit["levels"])
        level = float(fit["levels"][str(min(max(int(rnd), rounds[0]), rounds[-1]))])
    else:
        level = float(fit["mu"]) + float(fit["tau"]) * (int(rnd) - 1)
    level = max(level, 1e-6)
    return float(md_budget) * level, level


def prepare_attackers(cfg, entry: dict, log=print, device="cpu") -> None:
    """Compute (or load) every DGC-aware attacker's :func:`attacker_calibration` before the run starts, so that its
    first round does not wait minutes inside a ClientApp call (the launcher calls it beside the burn-in)."""
    if cfg.attack.name != "adaptive_update" or cfg.attack.get("md_budget") is None:
        return
    from .experiment import make_plan

    plan = make_plan(cfg)
    for pid in sorted(plan.malicious):
        attacker_calibration(cfg, entry, pid, *attacker_images(cfg, plan, pid), log=log, device=device)


def attacker_images(cfg, plan, pid: int) -> tuple[np.ndarray, np.ndarray]:
    """(data, probe) of attacker ``pid``: its probe is the first ``attack.probe_size`` images of its validation batch,
    its calibration data the rest of that batch and its clean stream (disjoint from the probe)."""
    val_idx, _, stream_idx = plan.attacker[pid]
    k = int(cfg.attack.probe_size)
    data = np.concatenate([np.asarray(stream_idx if stream_idx is not None else [], dtype=np.int64),
                           np.asarray(val_idx[k:], dtype=np.int64)])
    return data, np.asarray(val_idx[:k], dtype=np.int64)
