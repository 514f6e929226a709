"""FLDetector as a wrapper around any Flower strategy (``strategy=fldetector``): the history-based reference defence.

Source: Zhang et al., "FLDetector: Defending Federated Learning Against Model Poisoning Attacks via Detecting
Malicious Clients", KDD 2022 (code ``zaixizhang/FLDetector``). The maths, and where this port differs from the
original code, are in :mod:`fl_mdisc.fldetector` (L-BFGS Hessian-vector products, window-averaged normalised
prediction errors) and :mod:`fl_mdisc.gate` (gap statistic, then 2-means). It needs no f and no threshold.

Per round: the validated replies (their partition ids bound to their senders by the ReplyValidator) are turned into
vectors x_i = -(theta_i - theta_t); every client that can be predicted gets a normalised distance; the gate runs over
the scores of all clients not yet removed and removes the flagged ones; the inner strategy aggregates the replies
of the clients still in the federation. Logged per client: its distance, its score and whether it is removed
(``flagged``: its update is left out of the aggregate). The detector's memory is checkpointed (:meth:`state`).
"""

from __future__ import annotations

from collections.abc import Iterable
from logging import INFO

import numpy as np
from flwr.app import Message
from flwr.common import log
from flwr.serverapp.strategy import Strategy

from fl_mdisc.byzfl_ref import flatten
from fl_mdisc.fldetector import FLDetectorState

from .base import StrategyWrapper, reply_arrays, reply_metrics


class FLDetector(StrategyWrapper):
    """Remove the clients FLDetector flags; delegate aggregation of the others to ``strategy``.

    Parameters
    ----------
    strategy : Strategy
        The aggregation rule of the clients that remain (FedAvg in the grid, as in the paper's main results).
    window : int
        Scores averaged per client (the original: 10).
    memory : int
        L-BFGS curvature pairs kept (the original: 10).
    warmup : int
        Rounds before predictions start (see :mod:`fl_mdisc.fldetector` for the original's values).
    seed : int
        Seeds the gap statistic's reference samples, per round.
    """

    def __init__(self, strategy: Strategy, window: int = 10, memory: int = 10, warmup: int = 10, seed: int = 0) -> None:
        super().__init__(strategy)
        self.detector = FLDetectorState(window=window, memory=memory, warmup=warmup)
        self.seed = int(seed)
        self.client_log: list[dict] = []

    def summary(self) -> None:
        d = self.detector
        log(INFO, "\t├── FLDetector: window %s, L-BFGS memory %s, warm-up %s rounds; gap statistic + 2-means",
            d.window, d.memory, d.warmup)
        super().summary()

    def state(self) -> dict:
        return self.detector.state()

    def load_state(self, state: dict) -> None:
        self.detector.load_state(state)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        replies = list(replies)
        ok = [m for m in replies if not m.has_error()]
        theta = flatten(self.current_arrays).astype(np.float64)
        x = {int(reply_metrics(m).get("partition-id", -1)): theta - flatten(reply_arrays(m)).astype(np.float64)
             for m in ok}
        rng = np.random.default_rng([self.seed, int(server_round), 0xF1DE])
        dist = self.detector.step(server_round, theta, x, rng)
        removed = self.detector.removed
        kept = [m for m in ok if int(reply_metrics(m).get("partition-id", -1)) not in removed]
        self.client_log = [{"partition-id": pid, "fld-distance": dist.get(pid), "fld-score": self.detector.score(pid),
                            "flagged": pid in removed} for pid in sorted(x)]
        g = np.mean([x[int(reply_metrics(m)["partition-id"])] for m in kept], axis=0) if kept else None
        self.detector.commit(server_round, theta, x, g)
        if not kept:
            return None, None
        return self.strategy.aggregate_train(server_round, kept)
