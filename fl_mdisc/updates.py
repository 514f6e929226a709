"""Norms of a model update and the server's SGD step: the maths the server strategies (strategies/) and the server's
simulated clean federation (:mod:`fl_mdisc.calib_sim`) share, written once.

An update Delta is a list of arrays (one per parameter tensor); every norm spans all of them:

    ||Delta||_2 = sqrt(sum_i <Delta_i, Delta_i>),    ||Delta||_inf = max_i max |Delta_i|

(L-infinity as ``torch.nn.utils.clip_grad_norm_(..., norm_type='inf')`` computes its total norm).

The server step (FedAvgM, Hsu et al. 2019; Pang et al.'s harness: ``optim.SGD(lr, momentum)`` on the aggregate), with
the pseudo-gradient d_t = theta_t - theta_agg:

    v_t = beta v_{t-1} + d_t  (v_1 = d_1, as torch.optim.SGD),    theta_{t+1} = theta_t - lr v_t

>>> import numpy as np
>>> l2_norm([np.array([3.0]), np.array([0.0, 4.0])]), linf_norm([np.array([3.0]), np.array([0.0, -4.0])])
(5.0, 4.0)
>>> theta, v = server_sgd_step([np.zeros(1)], [np.ones(1)], None, lr=0.5, momentum=0.9)
>>> theta[0].tolist(), v[0].tolist()
([-0.5], [1.0])
>>> server_sgd_step(theta, [np.ones(1)], v, lr=0.5, momentum=0.9)[0][0].tolist()
[-1.45]
"""

from __future__ import annotations

import math

import numpy as np


def l2_norm(arrays: list[np.ndarray]) -> float:
    return math.sqrt(sum(float(np.vdot(a, a)) for a in arrays))


def linf_norm(arrays: list[np.ndarray]) -> float:
    return max((float(np.max(np.abs(a))) for a in arrays if np.size(a)), default=0.0)


NORMS = {"l2": l2_norm, "linf": linf_norm}


def update_norm(arrays: list[np.ndarray], kind: str = "l2") -> float:
    if kind not in NORMS:
        raise ValueError(f"unknown norm {kind!r}; choose one of {sorted(NORMS)}")
    return NORMS[kind](arrays)


def server_sgd_step(theta: list[np.ndarray], d: list[np.ndarray], v: list[np.ndarray] | None, lr: float,
                    momentum: float) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """(theta_{t+1}, v_t) from theta_t, the pseudo-gradient d_t and v_{t-1} (None at the first step); v is None
    throughout without momentum. theta keeps its dtype."""
    if momentum > 0.0:
        v = d if v is None else [momentum * a + g for a, g in zip(v, d)]
        d = v
    return [np.asarray(t - lr * g, dtype=t.dtype) for t, g in zip(theta, d)], v
