"""The field's reference attacks and robust aggregators, taken from ByzFL (EPFL, ``byzfl`` on PyPI), never rewritten.

ByzFL implements each one as a small callable on stacked update vectors (n x d). This module maps our config names
to those callables and holds the pure helpers both Flower faces use: flattening a model's arrays into one vector and
back, and running ByzFL's randomised pieces under a seed of (run seed, round) so that a run replays exactly.

Aggregators (``strategy.aggregator``), with ByzFL's maths (see each class's docstring in ``byzfl.aggregators``):

* ``average``: (1/n) sum_i x_i.  ``median``: coordinate-wise median.  ``trmean``: coordinate-wise mean after removing
  the f largest and f smallest values.  ``geomed``: the geometric median argmin_y sum_i ||y - x_i||, by smoothed
  Weiszfeld (``nu``, ``T`` iterations).  ``krum`` / ``multikrum``: the vector(s) with the smallest sum of squared
  distances to their n - f - 1 nearest neighbours (MultiKrum averages the n - f best).  ``cc`` (Centered Clipping,
  Karimireddy et al. 2021): m <- m + (1/n) sum_i clip_tau(x_i - m), ``L`` times from m = 0.  ``mda`` (minimum
  diameter averaging): the mean of the n - f vectors of smallest diameter.  ``monna``: the mean of the n - f vectors
  nearest to the trusted vector x_idx.  ``meamed``: coordinate-wise mean of the n - f values nearest the median.
  ``caf`` (covariance-bound agnostic filter) and ``smea`` (smallest maximum eigenvalue averaging): spectral filters.
* Pre-aggregations (``strategy.pre``, applied in order): ``nnm`` (nearest-neighbour mixing: each x_i replaced by the
  mean of its n - f nearest vectors), ``bucketing`` (random buckets of ``s`` vectors averaged), ``clipping`` (each
  x_i scaled to norm <= c), ``arc`` (adaptive robust clipping: the f + ... largest norms clipped to the next one).

Attacks (``attack=alie|ipm|signflip|gaussian|inf|mimic``): the vector every attacker of the round sends, computed
from that round's honest vectors (the omniscient threat model of the Byzantine-FL literature):

* ``alie`` ("A Little Is Enough", Baruch et al. 2019): mu + tau * sigma (coordinate-wise mean and std of the honest
  vectors), ``tau`` default 1.5.  ``ipm`` (Inner-Product Manipulation, Xie et al. 2020): -tau * mu.
  ``signflip``: -mu.  ``gaussian``: N(mu, sigma^2) per coordinate (ByzFL's ``mu``, ``sigma``).  ``inf``: +inf in
  every coordinate (our ReplyValidator drops it: a reference for the validator, not for an aggregator).  ``mimic``
  (Karimireddy et al. 2022): a copy of the honest vector number ``epsilon`` (ByzFL's form: a fixed index, not the
  paper's learnt direction).
* ``attack.optimal=true`` (``alie`` and ``ipm`` only): ByzFL's ``Optimal_*`` variants, which search tau to
  maximise the distance of the aggregate from the honest mean under the run's own ByzFL aggregator and
  pre-aggregations (``strategy=byzfl`` only: it needs an aggregator ByzFL can evaluate).

Differences from ByzFL's own benchmark: we aggregate update vectors x_i = theta_i - theta (the clients send their new
models; the adapter subtracts the global model), not gradients, and the server step (lr, momentum) is ours.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np

# name -> (ByzFL class, the config keys it takes); "f" is the number of Byzantine vectors tolerated
AGGREGATORS = {
    "average": ("Average", ()), "median": ("Median", ()), "trmean": ("TrMean", ("f",)),
    "geomed": ("GeometricMedian", ("nu", "T")), "krum": ("Krum", ("f",)), "multikrum": ("MultiKrum", ("f",)),
    "cc": ("CenteredClipping", ("L", "tau")), "mda": ("MDA", ("f",)), "monna": ("MoNNA", ("f", "idx")),
    "meamed": ("Meamed", ("f",)), "caf": ("CAF", ("f",)), "smea": ("SMEA", ("f",)),
}
PRE_AGGREGATORS = {"nnm": ("NNM", ("f",)), "bucketing": ("Bucketing", ("s",)), "clipping": ("Clipping", ("c",)),
                   "arc": ("ARC", ("f",))}
ATTACKS = {"alie": ("ALittleIsEnough", ("tau",)), "ipm": ("InnerProductManipulation", ("tau",)),
           "signflip": ("SignFlipping", ()), "gaussian": ("Gaussian", ("mu", "sigma")), "inf": ("Inf", ()),
           "mimic": ("Mimic", ("epsilon",))}
OPTIMAL = {"alie": "Optimal_ALittleIsEnough", "ipm": "Optimal_InnerProductManipulation"}
FLOAT_KEYS = {"nu", "tau", "c", "mu", "sigma"}  # ByzFL checks types strictly: Gaussian(0, 1) raises


def _choose(table: dict, name: str, what: str):
    if name not in table:
        from .errors import ConfigError

        raise ConfigError(f"unknown {what} {name!r}; choose one of {sorted(table)}")
    return table[name]


def _build(module: str, table: dict, name: str, what: str, params: dict):
    import importlib

    cls_name, keys = _choose(table, name, what)
    cls = getattr(importlib.import_module(module), cls_name)
    kw = {}
    for k in keys:
        if params.get(k) is not None:
            v = params[k]
            kw[k] = float(v) if k in FLOAT_KEYS else int(v)
    return cls(**kw)


def make_aggregator(name: str, params: dict):
    """ByzFL aggregator ``name`` with the given parameters (None: ByzFL's default)."""
    return _build("byzfl", AGGREGATORS, name, "strategy.aggregator", params)


def make_pre(names: list[str], params: dict) -> list:
    return [_build("byzfl", PRE_AGGREGATORS, n, "strategy.pre entry", params) for n in names]


def make_attack(name: str, params: dict, agg=None, pre: list | None = None, f: int = 1):
    """ByzFL attack ``name``; with ``params['optimal']`` its ``Optimal_*`` variant against ``agg`` and ``pre``."""
    if params.get("optimal"):
        import byzfl

        if name not in OPTIMAL:
            from .errors import ConfigError

            raise ConfigError(f"attack.optimal=true exists for {sorted(OPTIMAL)} only, not {name!r}")
        return getattr(byzfl, OPTIMAL[name])(agg=agg, pre_agg_list=list(pre or []), f=int(f))
    return _build("byzfl", ATTACKS, name, "attack", params)


def flatten(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(a, dtype=np.float32).reshape(-1) for a in arrays])


def unflatten(vec: np.ndarray, like: list[np.ndarray]) -> list[np.ndarray]:
    """Inverse of :func:`flatten`: the shapes and dtypes of ``like``."""
    total = sum(int(np.prod(a.shape)) if a.shape else 1 for a in like)
    if len(vec) != total:
        raise ValueError(f"vector of length {len(vec)} does not fit arrays of {total} values")
    out, i = [], 0
    for a in like:
        n = int(np.prod(a.shape)) if a.shape else 1
        out.append(np.asarray(vec[i: i + n]).reshape(a.shape).astype(a.dtype, copy=False))
        i += n
    return out


def aggregate(vectors: np.ndarray, pre: list, agg) -> np.ndarray:
    """Apply the pre-aggregations in order, then the aggregator (ByzFL's own composition)."""
    v = np.asarray(vectors, dtype=np.float32)
    for p in pre:
        v = np.asarray(p(v), dtype=np.float32)
    return np.asarray(agg(v), dtype=np.float32)


@contextlib.contextmanager
def seeded(seed: int):
    """Run ByzFL's randomised pieces (bucketing's permutation, the Gaussian attack, CAF/SMEA's random starts), which
    draw from numpy's and torch's global generators, from ``seed``; restore both generators afterwards."""
    import torch

    state = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        np.random.seed(int(seed) % (2 ** 32))
        torch.manual_seed(int(seed))
        try:
            yield
        finally:
            np.random.set_state(state)


def attackers_per_round(num_malicious: int, num_clients: int, per_round: int) -> int:
    """The attackers' own count per round for ByzFL's optimal attacks (the simulated attackers know it; no defence
    reads it): ceil(num_malicious * K / N), at least 1."""
    return max(1, math.ceil(num_malicious * per_round / num_clients)) if num_clients else 1
