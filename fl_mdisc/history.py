r"""DGC's history gate: a per-client score from the client's own past participations, judged against the
federation's own recent statistics, with no f and no fitted threshold (our design; issue 26).

Inputs per round t: the partition ids k of the round's valid replies (bound to their senders by the server) and DGC's
statistic :math:`s_{k,t}` (:mod:`strategies.dgc`: the increase of Memorization Discrepancy the GC-clipped update
causes on the server's probe set).

1. Centre within the round and scale by the federation's recent spread (robust to a minority of attackers):

   .. math::

       c_{k,t} = s_{k,t} - \mathrm{med}_j\, s_{j,t}, \qquad
       \sigma_t = 1.4826\; \mathrm{med}\,\{ |c_{j,u}| : u \in (t - R, t] \}, \qquad
       z_{k,t} = c_{k,t} / \sigma_t

   (R = ``pool_rounds`` rounds of every participant; the median of the round removes the drift every update shares,
   the pooled median absolute deviation gives the scale of the honest spread).

2. The client's score is the mean of its last W (``window``) values of z, this round's included:
   :math:`h_{k,t} = \mathrm{mean}(z_{k,u})` over its last W participations. With K of N clients per round these are
   the rounds it took part in, however far apart; at first sight :math:`h = z`.

3. Gate: flagged when :math:`h_{k,t} > \kappa` with :math:`\kappa = 3.5` (the robust "modified z-score" cut of
   Iglewicz and Hoaglin, 1993; a convention of the statistics literature, not a value fitted to any run), and the
   flagged update's shrink ratio is :math:`\kappa / h_{k,t}` (DGC clips it to :math:`C \kappa / h_{k,t}`).

Why this form (measured on burn-in seeds kept apart from every reported seed; docs/history.md): ...

State: the recent centred values and each client's window, keyed by partition id; :meth:`state` / :meth:`load_state`
round-trip them exactly (the server checkpoint).
"""

from __future__ import annotations

from collections import deque

import numpy as np

KAPPA = 3.5  # Iglewicz & Hoaglin (1993): |modified z| > 3.5 is a potential outlier


class HistoryGate:
    """Per-client history of DGC's statistic and the robust gate over it.

    Parameters
    ----------
    window : int
        W, participations averaged per client.
    pool_rounds : int
        R, rounds whose centred statistics set the scale.
    kappa : float
        The cut on the client's mean robust z.
    """

    name = "history"

    def __init__(self, window: int = 5, pool_rounds: int = 10, kappa: float = KAPPA) -> None:
        if int(window) < 1 or int(pool_rounds) < 1 or not float(kappa) > 0:
            raise ValueError(f"the history gate needs window >= 1, pool_rounds >= 1, kappa > 0 "
                             f"(got {window}, {pool_rounds}, {kappa})")
        self.window, self.pool_rounds, self.kappa = int(window), int(pool_rounds), float(kappa)
        self.recent: deque = deque(maxlen=self.pool_rounds)
        self.clients: dict[int, deque] = {}

    def describe(self) -> str:
        return f"mean robust z over a client's last {self.window} participations > {self.kappa}"

    def zscores(self, stats: list[float]) -> tuple[np.ndarray, float, float]:
        """(z of this round's statistics, the round's median, sigma); records the centred values."""
        s = np.asarray(stats, dtype=np.float64)
        med = float(np.median(s)) if len(s) else 0.0
        c = s - med
        self.recent.append(c)
        pool = np.concatenate(list(self.recent))
        sigma = 1.4826 * float(np.median(np.abs(pool))) if len(pool) else 0.0
        z = c / sigma if sigma > 0 else np.zeros_like(c)
        return z, med, sigma

    def score(self, pid: int) -> float | None:
        w = self.clients.get(int(pid))
        return float(np.mean(w)) if w else None

    def __call__(self, server_round: int, pids: list[int], stats: list[float]) -> list[tuple[bool, float, dict]]:
        z, med, sigma = self.zscores(stats)
        out = []
        for pid, zk in zip(pids, z):
            self.clients.setdefault(int(pid), deque(maxlen=self.window)).append(float(zk))
            h = self.score(pid)
            flag = h > self.kappa
            out.append((flag, self.kappa / h if flag else 1.0,
                        {"z": float(zk), "score": h, "seen": len(self.clients[int(pid)]), "round_median": med,
                         "sigma": sigma}))
        return out

    def state(self) -> dict:
        return {"recent": [c.tolist() for c in self.recent],
                "clients": {str(p): list(w) for p, w in self.clients.items()}}

    def load_state(self, state: dict) -> None:
        self.recent = deque((np.asarray(c, dtype=np.float64) for c in state["recent"]), maxlen=self.pool_rounds)
        self.clients = {int(p): deque(w, maxlen=self.window) for p, w in state["clients"].items()}
