"""ByzFL's robust aggregators as a Flower strategy: one adapter for all of them (``strategy=byzfl``).

Source: ByzFL (LPD-EPFL, ``byzfl`` 0.0.11; maths and papers in :mod:`fl_mdisc.byzfl_ref`). Per round, with the
global model theta and the replies theta_1..theta_n (already validated, and clipped when GC/DGC wrap this)::

    x_i = flatten(theta_i) - flatten(theta)                        (update vectors, n x d)
    x   = pre_k(... pre_1(x))                                      (strategy.pre, in order)
    theta_agg = theta + unflatten(aggregator(x))                   (strategy.aggregator)

and the server step (ServerSGD: lr, momentum) applies theta - theta_agg as every other strategy does, so a ByzFL row
differs from ST only in its aggregation rule. ByzFL's aggregators are used as stateful objects across rounds, as
ByzFL does: centered clipping centres each round on its previous aggregate (m), which the server checkpoint keeps. Randomised pieces run under the seed (run seed, round). Metrics are
aggregated as FedAvg does. Where this differs from ByzFL's own benchmark: ByzFL aggregates gradients (or momentum
vectors) of one SGD step; here the vectors are our clients' model updates, whatever their local training.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from flwr.app import ArrayRecord
from flwr.serverapp.strategy import FedAvg

from fl_mdisc import byzfl_ref

from .base import reply_arrays


class ByzFLAggregation(FedAvg):
    """FedAvg whose aggregation is ByzFL's ``pre`` + ``aggregator`` on the update vectors."""

    def __init__(self, aggregator, pre: list, reference: Callable[[], list] | None = None, seed: int = 0,
                 **kw) -> None:
        super().__init__(**kw)
        self.aggregator, self.pre, self.seed = aggregator, list(pre), int(seed)
        self.reference = reference  # the global model of this round (set by the factory: the sampler's copy)

    def state(self) -> dict | None:
        """What ByzFL keeps between calls (centered clipping's centre m: the previous aggregate, as in Karimireddy et
        al. 2021), for the server checkpoint, so that a resumed run equals an uninterrupted one."""
        m = getattr(self.aggregator, "m", None)
        return None if m is None else {"m": np.asarray(m).copy()}

    def load_state(self, state: dict) -> None:
        if state and "m" in state and hasattr(self.aggregator, "m"):
            self.aggregator.m = np.asarray(state["m"]).copy()

    def aggregate_train(self, server_round, replies):
        replies = list(replies)
        arrays, metrics = super().aggregate_train(server_round, replies)  # FedAvg's checks and metrics
        if arrays is None:
            return None, metrics
        theta = self.reference()
        base = byzfl_ref.flatten(theta)
        vectors = [byzfl_ref.flatten(reply_arrays(m)) - base for m in replies if not m.has_error()]
        with byzfl_ref.seeded(self.seed * 1_000_003 + int(server_round)):
            agg = byzfl_ref.aggregate(vectors, self.pre, self.aggregator)
        return ArrayRecord(byzfl_ref.unflatten(base + agg, theta)), metrics
