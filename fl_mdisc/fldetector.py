r"""FLDetector (Zhang, Cao, Jia, Gong, Wang: "FLDetector: Defending Federated Learning Against Model Poisoning Attacks
via Detecting Malicious Clients", KDD 2022; code ``zaixizhang/FLDetector``): the history-based peer of DGC.

Idea: an honest client's update is predictable from its previous one, because the global loss changes smoothly;
a malicious client's is not. With the global models :math:`\theta_t` and the aggregated gradients :math:`g_t`,
the server keeps the last m pairs :math:`s_j = \theta_j - \theta_{j-1}`, :math:`y_j = g_j - g_{j-1}` and
approximates the Hessian-vector product :math:`H_t v` by L-BFGS's compact form (Byrd, Nocedal and Schnabel 1994):

.. math::

    \sigma = \frac{y_m^\top s_m}{s_m^\top s_m},\quad A = S^\top Y,\quad L = \mathrm{tril}(A, -1),\quad
    D = \mathrm{diag}(A),\quad
    M = \begin{pmatrix} \sigma S^\top S & L \\ L^\top & -D \end{pmatrix},\quad
    H v \approx \sigma v - [\sigma S \;\; Y]\, M^{-1} \begin{pmatrix} \sigma S^\top v \\ Y^\top v \end{pmatrix}.

Client i's predicted gradient is :math:`\hat g_i^t = g_i^{\tau} + H_t(\theta_t - \theta_\tau)`, with :math:`\tau`
the round it was last seen; its distance :math:`d_i^t = \lVert \hat g_i^t - g_i^t \rVert_2` is normalised within
the round, and its suspicion score is the mean of its last w normalised distances. Every round the gap statistic
decides whether the scores hold an outlying group and 2-means flags it (:mod:`fl_mdisc.gate`); flagged clients are
removed from the federation, as the paper removes them.

Vectors: a client's "gradient" here is its negated update :math:`x_i = -(\theta_i - \theta_t)` (the raw negative
gradient with one local step at client lr 1, as in the original; with several local steps, the negated update), and
:math:`g_t` is the mean of the kept :math:`x_i`.

Where this differs from the original code, and why:

* Partial participation (K of N): the original has every client in every round, so :math:`\tau = t - 1`. Here
  :math:`\tau` is the client's last round and the Hessian acts on :math:`\theta_t - \theta_\tau`. A client is
  scored from its second participation on; at first sight it has no score.
* Normalisation: :math:`d_i / \mathrm{mean}_j d_j` over the round's scored clients, where the original divides by
  the sum over its 100 clients (the same up to a constant with full participation; comparable across rounds of
  different sizes here). The score is the mean of up to w values (the original sums the last w rounds).
* Warm-up: the original uses the Hessian after 20 (CIFAR) / 50 (MNIST) of 2000 / 500 rounds and detects once 10
  rounds of scores exist; here both default to the L-BFGS memory (10), so detection can start at round 21 of a
  50-round run. The original stops training at its first detection and restarts it without the flagged clients; a
  federation under accumulative poisoning cannot restart, so it goes on without them, and the score history starts
  afresh (as it does in the restarted training): the next detection needs w new rounds of scores.
* A singular M (non-convex curvature pairs) is solved by least squares instead of raising.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from .gate import outlying


def lbfgs_hvp(S: list[np.ndarray], Y: list[np.ndarray], v: np.ndarray) -> np.ndarray:
    """L-BFGS compact approximation of H v from the pairs (s_j, y_j), oldest first (the original's ``lbfgs``)."""
    Sm = np.stack([np.asarray(s, dtype=np.float64) for s in S], axis=1)  # d x m
    Ym = np.stack([np.asarray(y, dtype=np.float64) for y in Y], axis=1)
    v = np.asarray(v, dtype=np.float64)
    ss = float(S[-1] @ S[-1])
    sigma = float(np.asarray(Y[-1], dtype=np.float64) @ np.asarray(S[-1], dtype=np.float64)) / ss if ss > 0 else 0.0
    A = Sm.T @ Ym
    L = np.tril(A, -1)
    D = np.diag(np.diag(A))
    M = np.block([[sigma * (Sm.T @ Sm), L], [L.T, -D]])
    p = np.concatenate([sigma * (Sm.T @ v), Ym.T @ v])
    try:
        q = np.linalg.solve(M, p)
    except np.linalg.LinAlgError:
        q = np.linalg.lstsq(M, p, rcond=None)[0]
    return sigma * v - np.concatenate([sigma * Sm, Ym], axis=1) @ q


class FLDetectorState:
    """The server's memory for FLDetector: curvature pairs, each client's last vector and round, score windows and
    the removed clients. Everything is plain numpy/python, so the server checkpoint stores it (:meth:`state`)."""

    def __init__(self, window: int = 10, memory: int = 10, warmup: int = 10) -> None:
        if window < 1 or memory < 1 or warmup < 0:
            raise ValueError(f"FLDetector needs window >= 1, memory >= 1, warmup >= 0 (got {window}, {memory}, {warmup})")
        self.window, self.memory, self.warmup = int(window), int(memory), int(warmup)
        self.S: deque = deque(maxlen=self.memory)
        self.Y: deque = deque(maxlen=self.memory)
        self.prev: tuple[np.ndarray, np.ndarray] | None = None  # (theta_{t-1}, g_{t-1})
        self.last: dict[int, tuple[int, np.ndarray]] = {}  # pid -> (round last seen, its vector then)
        self.thetas: dict[int, np.ndarray] = {}  # round -> theta_round, while a client's last round refers to it
        self.scores: dict[int, deque] = {}
        self.scored_rounds = 0
        self.removed: set[int] = set()

    def distances(self, rnd: int, theta: np.ndarray, x: dict[int, np.ndarray]) -> dict[int, float]:
        """Normalised prediction errors d_i / mean_j d_j of this round's clients that can be predicted."""
        if rnd <= self.warmup or not self.S:
            return {}
        hv: dict[int, np.ndarray] = {}
        raw = {}
        for pid, vec in x.items():
            if pid not in self.last:
                continue
            tau, old = self.last[pid]
            if tau not in hv:
                hv[tau] = lbfgs_hvp(list(self.S), list(self.Y), theta - self.thetas[tau])
            raw[pid] = float(np.linalg.norm(old + hv[tau] - vec))
        mean = float(np.mean(list(raw.values()))) if raw else 0.0
        return {pid: (d / mean if mean > 0 else 1.0) for pid, d in raw.items()}

    def score(self, pid: int) -> float | None:
        w = self.scores.get(pid)
        return float(np.mean(w)) if w else None

    def step(self, rnd: int, theta: np.ndarray, x: dict[int, np.ndarray], rng: np.random.Generator) -> dict:
        """One round: score this round's clients, run the gate over every client's score, remove the flagged.
        Returns {pid: normalised distance} of this round. Call :meth:`commit` with the kept clients' mean after."""
        dist = self.distances(rnd, theta, x)
        for pid, d in dist.items():
            self.scores.setdefault(pid, deque(maxlen=self.window)).append(d)
        if dist:
            self.scored_rounds += 1
        if self.scored_rounds >= self.window:
            pids = sorted(p for p in self.scores if p not in self.removed and self.scores[p])
            flags = outlying([self.score(p) for p in pids], rng)
            if flags.any():  # a detection: remove them and start a fresh score history, as the original's restart does
                self.removed |= {p for p, f in zip(pids, flags) if f}
                self.scores, self.scored_rounds = {}, 0
        return dist

    def commit(self, rnd: int, theta: np.ndarray, x: dict[int, np.ndarray], g: np.ndarray | None) -> None:
        """Remember this round: each client's vector and round, theta_t, and the pair (s_t, y_t)."""
        for pid, vec in x.items():
            self.last[pid] = (rnd, np.asarray(vec, dtype=np.float32))
        self.thetas[rnd] = np.asarray(theta, dtype=np.float32)
        live = {t for t, _v in self.last.values()}
        self.thetas = {t: th for t, th in self.thetas.items() if t in live}
        if g is None:
            return
        g = np.asarray(g, dtype=np.float64)
        if self.prev is not None:
            self.S.append(np.asarray(theta, dtype=np.float64) - self.prev[0])
            self.Y.append(g - self.prev[1])
        self.prev = (np.asarray(theta, dtype=np.float64), g)

    def state(self) -> dict:
        return {"S": list(self.S), "Y": list(self.Y), "prev": self.prev, "last": dict(self.last),
                "thetas": dict(self.thetas), "scores": {p: list(w) for p, w in self.scores.items()},
                "scored_rounds": self.scored_rounds, "removed": sorted(self.removed)}

    def load_state(self, st: dict) -> None:
        self.S = deque(st["S"], maxlen=self.memory)
        self.Y = deque(st["Y"], maxlen=self.memory)
        self.prev = st["prev"]
        self.last = dict(st["last"])
        self.thetas = dict(st["thetas"])
        self.scores = {int(p): deque(w, maxlen=self.window) for p, w in st["scores"].items()}
        self.scored_rounds = int(st["scored_rounds"])
        self.removed = set(int(p) for p in st["removed"])
