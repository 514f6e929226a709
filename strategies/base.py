"""A Strategy that forwards everything to an inner strategy (the shape of Flower's DP wrappers)."""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy


class StrategyWrapper(Strategy):
    def __init__(self, strategy: Strategy) -> None:
        super().__init__()
        self.strategy = strategy
        self.current_arrays: list | None = None

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self.current_arrays = arrays.to_numpy_ndarrays()
        return self.strategy.configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        return self.strategy.aggregate_train(server_round, replies)

    def configure_evaluate(self, server_round, arrays, config, grid):
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return self.strategy.aggregate_evaluate(server_round, replies)

    def summary(self) -> None:
        self.strategy.summary()

    def state(self) -> dict | None:
        """What this wrapper keeps between rounds, for the server checkpoint (None: nothing)."""
        return None

    def load_state(self, state: dict) -> None:
        """Restore :meth:`state` on resume."""

    def innermost(self) -> Strategy:
        s = self.strategy
        while isinstance(s, StrategyWrapper):
            s = s.strategy
        return s


def reply_arrays(msg: Message) -> list:
    return next(iter(msg.content.array_records.values())).to_numpy_ndarrays()


def reply_metrics(msg: Message) -> MetricRecord:
    return next(iter(msg.content.metric_records.values()))


def set_reply_arrays(msg: Message, arrays: list) -> None:
    key = next(iter(msg.content.array_records.keys()))
    msg.content[key] = ArrayRecord(arrays)
