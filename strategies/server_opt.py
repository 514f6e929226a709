"""Server SGD with momentum on top of any aggregator (FedAvgM generalised).

Source: FedAvgM (Hsu et al. 2019, Flower's ``FedAvgM``) and the official federated harness of Pang et al.
(server ``optim.SGD(lr=0.1, momentum=0.9)`` applied to the aggregate). With the inner aggregate theta_agg::

    d_t = theta_t - theta_agg            (pseudo-gradient)
    v_t = beta * v_{t-1} + d_t           (v_1 = d_1, as torch.optim.SGD and Flower's FedAvgM)
    theta_{t+1} = theta_t - lr * v_t

Wrapping FedAvg this equals Flower's FedAvgM (tested); it also puts FedMedian, FedTrimmedAvg and MultiKrum
on the same server optimiser so that the reference rows differ from ST only in the aggregation rule.
"""

from __future__ import annotations

import numpy as np
from flwr.app import ArrayRecord

from .base import StrategyWrapper


class ServerSGD(StrategyWrapper):
    def __init__(self, strategy, lr: float = 1.0, momentum: float = 0.0) -> None:
        super().__init__(strategy)
        self.lr, self.momentum = float(lr), float(momentum)
        self.momentum_vector: list[np.ndarray] | None = None

    def aggregate_train(self, server_round, replies):
        arrays, metrics = self.strategy.aggregate_train(server_round, replies)
        if arrays is None:
            return None, metrics
        agg = arrays.to_numpy_ndarrays()
        d = [c - a for c, a in zip(self.current_arrays, agg)]
        if self.momentum > 0.0:
            if self.momentum_vector is None:
                self.momentum_vector = d
            else:
                self.momentum_vector = [self.momentum * v + g for v, g in zip(self.momentum_vector, d)]
            d = self.momentum_vector
        new = [np.asarray(c - self.lr * g, dtype=c.dtype) for c, g in zip(self.current_arrays, d)]
        return ArrayRecord(new), metrics
