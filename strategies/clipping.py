"""Pure helpers for update clipping (no Flower): the maths of GC and DGC.

GC (Pascanu et al. 2013; Pang et al.'s federated harness, L2): for a client update Delta_k = theta_k - theta_t,

    Delta_k <- Delta_k * min(1, C / ||Delta_k||_2).

DGC (our design, DESIGN.md section 5): with MD_k the discrepancy of the GC-clipped model theta_t + Delta_k and
P_t = mu + tau * t,

    C_k = C * min(1, P_t / MD_k),    Delta_k <- Delta_k * min(1, C_k / ||Delta_k||_2),

and when MD_k <= P_t the GC factor itself is reused (not recomputed), so clean updates are clipped
bit-identically to GC.

DGC ``mode="scale"`` (our variant): a flagged update is shrunk by P_t / MD_k whatever its norm,

    Delta_k <- Delta_k * f_k * P_t / MD_k,    f_k = min(1, C / ||Delta_k||_2),

i.e. the bound is C_k = min(C, ||Delta_k||) * P_t / MD_k.

Norms: ``l2`` (Pang's harness, our default) or ``linf`` (the seed paper's code clips every step with
``clip_grad_norm_(params, 0.01, norm_type='inf')``: the factor min(1, C / max_i |Delta_i|) scales the whole
update); DGC's shrunken bound C_k is then in the same norm. For an update above C this equals ``mode="clip"``;
it differs for a flagged update *below* C, which a norm bound can never touch (an attacker that keeps its
norm small, as the lambda-update attacker of the one-participant harness does; see README).
"""

from __future__ import annotations

import numpy as np

from fl_mdisc.updates import NORMS, l2_norm, linf_norm, update_norm  # noqa: F401 (re-exported)


def update_of(reply: list[np.ndarray], current: list[np.ndarray]) -> list[np.ndarray]:
    return [np.asarray(r, dtype=np.float64) - np.asarray(c, dtype=np.float64) for r, c in zip(reply, current)]


def gc_factor(norm: float, clip_norm: float) -> float:
    """min(1, C / ||Delta||)."""
    return 1.0 if norm <= clip_norm else clip_norm / norm


DGC_MODES = ("clip", "scale")


def shrink(md: float, P: float) -> float:
    """min(1, P / s) for a flagged value s > P; 0 when P <= 0 (a threshold at or below zero leaves no bound)."""
    if md <= P:
        return 1.0
    return P / md if P > 0 else 0.0


def dgc_bound(clip_norm: float, md: float, P: float, norm: float | None = None, mode: str = "clip") -> float:
    """C_k = C * min(1, P / MD_k) (clip), or min(C, ||Delta||) * min(1, P / MD_k) (scale)."""
    base = clip_norm if mode == "clip" or norm is None else min(clip_norm, norm)
    return base if md <= P else base * shrink(md, P)


def dgc_factor(norm: float, clip_norm: float, md: float, P: float, gc_fac: float, mode: str = "clip") -> float:
    """Clip factor of DGC: GC's own factor when MD <= P; else min(1, C_k / ||Delta||) (clip) or
    f_GC * P / MD (scale)."""
    if md <= P:
        return gc_fac
    if mode == "scale":
        return gc_fac * shrink(md, P)
    if mode != "clip":
        raise ValueError(f"unknown DGC mode {mode!r}; choose one of {DGC_MODES}")
    return gc_factor(norm, dgc_bound(clip_norm, md, P))


def flagged_factor(norm: float, clip_norm: float, ratio: float, gc_fac: float, mode: str = "clip") -> float:
    """Clip factor of a flagged update whose gate gives the shrink ratio r in [0, 1] (the paper rule: r = P_t / s_k):
    min(1, C r / ||Delta||) (clip: the bound C_k = C r), or f_GC r (scale)."""
    if mode == "scale":
        return gc_fac * ratio
    if mode != "clip":
        raise ValueError(f"unknown DGC mode {mode!r}; choose one of {DGC_MODES}")
    return gc_factor(norm, clip_norm * ratio)


def apply_factor(current: list[np.ndarray], update: list[np.ndarray], factor: float) -> list[np.ndarray]:
    """theta_t + factor * Delta, in the dtype of the current model."""
    return [(c + factor * u).astype(c.dtype) for c, u in zip(current, update)]
