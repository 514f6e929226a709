"""The DGC-aware model-poisoning attacker (``attack=adaptive_update``; ours: no paper defines one).

A defence is judged by its strongest attacker (Tramer et al., NeurIPS 2020). The seed paper's adaptive attacker
(Table 3, :mod:`fl_mdisc.attack`'s ``beta``) is a data-poisoning one against DSC; this is its federated
counterpart against DGC (:mod:`strategies.dgc`): the lambda-update attacker of Pang's federated harness that knows
how DGC scores an update and keeps its own estimate of that score under a budget, trading damage for stealth.

Threat model. The attacker knows: the protocol (server lr eta, the GC/DGC rules and their statistic, the clients'
batch size, lr and local steps), the global model theta_t it receives every round, the burn-in historical checkpoint
theta_hist that DGC measures against (``strategy.hist=burnin``; every client receives it, as DSC needs it), and its
own clean data (its validation batch and stream). It does not know: the server's probe set, the server's calibration
set and therefore the exact C and P_t, the honest clients' data or updates.

What it computes. DGC's default statistic (``increase``) for an update Delta is

    s(Delta) = MD_P(theta_t + eta f(Delta) Delta) - MD_P(theta_t),
    MD_P(theta) = mean_{x in P} KL(softmax f(x; theta_hist) || softmax f(x; theta)),   f(Delta) = min(1, C / ||Delta||).

The attacker estimates it, s_hat, with its own clean validation images as P (the first ``attack.probe_size``) and
C_hat = the norm of the honest update it computes at theta_start (the server's C rule is the median honest norm).
Its reference level is the ``attack.ref_quantile`` (0.9) quantile of s_hat over the honest updates of its first
``attack.ref_batches`` (8) clean stream batches at theta_start (computed once, deterministic): what an honest client
scores. Budget b = ``attack.md_budget`` x that level (null: unaware, the plain lambda-update). Each round it builds
the lambda-update exactly as ``attack=lambda_update`` does (direction, norm rule, stealth pause) and sends c* Delta
with

    c* = max { c in [0, 1] : s_hat(c Delta) <= b }      (bisection, ``attack.search_steps`` = 10 halvings),

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


def reference_level(values: list[float], quantile: float) -> float:
    """The honest reference of the budget: the ``quantile`` of the attacker's honest estimates, floored at a small
    positive value (the increase statistic of honest updates is centred near 0, so a budget must not be <= 0)."""
    v = np.asarray(values, dtype=np.float64)
    q = float(np.quantile(v, quantile)) if len(v) else 0.0
    return max(q, 1e-6)
