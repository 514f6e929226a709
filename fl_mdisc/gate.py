r"""A gate without a threshold: does a set of suspicion scores hold an outlying group, and which scores are in it?

Source: FLDetector (Zhang et al., KDD 2022; code ``zaixizhang/FLDetector``, ``detection1`` and ``detection``), which
takes the number of clusters of the clients' scores from the gap statistic (Tibshirani, Walther and Hastie, JRSS-B
2001) and, when it is more than one, flags the cluster of larger mean found by 2-means.

For scores :math:`x_1..x_n`, min-max normalised to [0, 1], and :math:`k = 1..k_{max}` (7 in FLDetector):

.. math::

    W_k = \min_{C_1..C_k} \sum_{j} \sum_{i \in C_j} (x_i - \bar x_{C_j})^2, \qquad
    \mathrm{Gap}(k) = \log \tfrac{1}{B}\sum_{b=1}^{B} W_k^{(b)} - \log W_k, \qquad
    s_k = \sqrt{1 + 1/B}\; \mathrm{sd}_b\big(\log W_k^{(b)}\big)

with :math:`W_k^{(b)}` the same quantity on :math:`B` (10) reference samples of n values drawn uniformly on [0, 1].
The chosen k is the smallest with :math:`\mathrm{Gap}(k) \ge \mathrm{Gap}(k+1) - s_{k+1}`; k = 1 means "no
attacker". Otherwise the flagged set is the cluster of larger mean of the optimal 2-means split.

Where this differs from the original code, and why:

* k-means in one dimension is solved exactly (the optimal clusters of sorted values are contiguous: dynamic
  programming over split points), where the original calls scikit-learn's ``KMeans`` (Lloyd's algorithm from random
  starts). The exact optimum is what Lloyd's algorithm approximates; it is deterministic and needs no extra package.
* Degenerate inputs the original does not handle: fewer than three scores, or all scores equal (max = min, the
  normalisation divides by zero), give k = 1; when no k satisfies the rule (the original raises on an unbound
  variable) the largest k tried is chosen; :math:`W_k = 0` (every cluster a single value) counts as
  :math:`\mathrm{Gap}(k) = +\infty`. k_max is capped at n - 1.
* The reference samples come from a generator the caller seeds (the original draws from numpy's global one), so a
  run replays exactly. FLPoison's port returns k + 1 from this rule and so always reports an attack; this port
  follows the original.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> gap_k([1.0] * 9, rng)
1
>>> flagged = outlying([1.0, 1.1, 0.9, 1.0, 1.05, 0.95, 1.0, 1.02, 0.98, 6.0], rng)
>>> [i for i, f in enumerate(flagged) if f]
[9]
"""

from __future__ import annotations

import numpy as np

K_MAX = 7  # FLDetector: ks = range(1, 8)
N_REFS = 10  # FLDetector: nrefs = 10


def kmeans_1d(values, k: int) -> tuple[float, np.ndarray]:
    """Optimal k-means of 1-D ``values``: (W_k, labels), labels 0..k-1 in increasing order of the values.

    Dynamic programming over the sorted values: D[j][i] = min over the start s of the last cluster of
    D[j-1][s] + SSE(x_s..x_{i-1}), with prefix sums for the SSE."""
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    if n == 0:
        return 0.0, np.zeros(0, dtype=int)
    k = max(1, min(int(k), n))
    order = np.argsort(x, kind="stable")
    xs = x[order]
    c1 = np.concatenate([[0.0], np.cumsum(xs)])
    c2 = np.concatenate([[0.0], np.cumsum(xs * xs)])

    a = np.arange(n + 1)[:, None]  # start of the last cluster
    b = np.arange(n + 1)[None, :]  # its end (exclusive)
    with np.errstate(divide="ignore", invalid="ignore"):
        m = (b - a).astype(np.float64)
        tot = c1[b] - c1[a]
        cost = np.where(b > a, np.maximum(0.0, (c2[b] - c2[a]) - tot * tot / m), np.inf)
    D = np.full((k + 1, n + 1), np.inf)
    arg = np.zeros((k + 1, n + 1), dtype=int)
    D[0, 0] = 0.0
    for j in range(1, k + 1):
        cand = D[j - 1][:, None] + cost  # (start, end)
        arg[j] = np.argmin(cand, axis=0)
        D[j] = cand[arg[j], np.arange(n + 1)]
    labels_sorted = np.zeros(n, dtype=int)
    i = n
    for j in range(k, 0, -1):
        s = arg[j, i]
        labels_sorted[s:i] = j - 1
        i = s
    labels = np.empty(n, dtype=int)
    labels[order] = labels_sorted
    return float(D[k, n]), labels


def gap_k(scores, rng: np.random.Generator, k_max: int = K_MAX, n_refs: int = N_REFS) -> int:
    """The number of clusters the gap statistic picks for ``scores`` (1: no outlying group)."""
    x = np.asarray(scores, dtype=np.float64)
    n = len(x)
    if n < 3 or not np.all(np.isfinite(x)):
        return 1
    lo, hi = float(np.min(x)), float(np.max(x))
    if hi - lo <= 1e-12 * max(1.0, abs(hi)):
        return 1
    x = (x - lo) / (hi - lo)
    ks = list(range(1, min(int(k_max), n - 1) + 1))
    gaps, sds = [], []
    for k in ks:
        w = kmeans_1d(x, k)[0]
        ref = np.array([kmeans_1d(rng.uniform(0.0, 1.0, n), k)[0] for _ in range(int(n_refs))])
        log_ref = np.log(np.maximum(ref, 1e-300))
        gaps.append(np.inf if w <= 0 else float(np.log(np.mean(ref)) - np.log(w)))
        sds.append(float(np.sqrt(1.0 + 1.0 / n_refs) * np.std(log_ref)))
    for i in range(len(ks) - 1):
        if gaps[i] >= gaps[i + 1] - sds[i + 1]:
            return ks[i]
    return ks[-1]


def high_cluster(scores) -> np.ndarray:
    """Boolean mask of the cluster of larger mean of the optimal 2-means split of ``scores``."""
    x = np.asarray(scores, dtype=np.float64)
    if len(x) < 2:
        return np.zeros(len(x), dtype=bool)
    _w, labels = kmeans_1d(x, 2)
    return labels == 1


def outlying(scores, rng: np.random.Generator, k_max: int = K_MAX, n_refs: int = N_REFS) -> np.ndarray:
    """FLDetector's gate: nobody when the gap statistic picks one cluster, else the 2-means cluster of larger mean."""
    x = np.asarray(scores, dtype=np.float64)
    if gap_k(x, rng, k_max, n_refs) <= 1:
        return np.zeros(len(x), dtype=bool)
    return high_cluster(x)
