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

from flwr.app import ArrayRecord

from fl_mdisc.updates import server_sgd_step

from .base import StrategyWrapper


class ServerSGD(StrategyWrapper):
    def __init__(self, strategy, lr: float = 1.0, momentum: float = 0.0) -> None:
        super().__init__(strategy)
        self.lr, self.momentum = float(lr), float(momentum)
        self.momentum_vector: list | None = None

    def aggregate_train(self, server_round, replies):
        arrays, metrics = self.strategy.aggregate_train(server_round, replies)
        if arrays is None:
            return None, metrics
        agg = arrays.to_numpy_ndarrays()
        d = [c - a for c, a in zip(self.current_arrays, agg)]
        new, self.momentum_vector = server_sgd_step(self.current_arrays, d, self.momentum_vector, self.lr,
                                                     self.momentum)
        return ArrayRecord(new), metrics
