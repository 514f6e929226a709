"""Hand-made Flower replies for strategy unit tests (no Ray, no run)."""

import time

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
from flwr.app.message_type import MessageType
from flwr.app.metadata import Metadata

from strategies.base import StrategyWrapper


def reply(arrays, pid, num_examples=100, extra=None, dtype=np.float32):
    md = Metadata(run_id=1, message_id=f"m{pid}", src_node_id=0, dst_node_id=pid + 10, reply_to_message_id="",
                  group_id="", created_at=time.time(), ttl=3600, message_type=MessageType.TRAIN)
    request = Message(RecordDict(), metadata=md)
    metrics = {"num-examples": num_examples, "partition-id": pid, **(extra or {})}
    return Message(RecordDict({"arrays": ArrayRecord([np.asarray(a, dtype=dtype) for a in arrays]),
                               "metrics": MetricRecord(metrics)}), reply_to=request)


def prime(strategy, arrays):
    """What configure_train does to the wrappers: remember the current global model."""
    arrays = [np.asarray(a, dtype=np.float32) for a in arrays]
    s = strategy
    while isinstance(s, StrategyWrapper):
        s.current_arrays = [a.copy() for a in arrays]
        s = s.strategy
    return arrays
