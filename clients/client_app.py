"""The ClientApp (Flower Message API): dispatches each train message to the honest or the malicious client.

Identity comes from ``context.node_config["partition-id"]`` (never the random node id). The resolved run
config travels in every train message (``cfg-json``) together with the per-round values the server decides
(round, phase, DSC threshold, the historical/start checkpoints' paths and checksums), so a client needs no
state at all: everything a client does is a function of (config, seed, partition id, round), so Ray may
recycle actors freely and a resumed run replays identically.
"""

from __future__ import annotations

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from . import runtime
from .honest import train_honest
from .malicious import train_malicious

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    conf = msg.content["config"]
    cfg_json = str(conf["cfg-json"])
    pid = int(context.node_config["partition-id"])
    params = msg.content["arrays"].to_numpy_ndarrays()
    plan = runtime.plan(cfg_json)
    fn = train_malicious if pid in plan.malicious else train_honest
    new, metrics = fn(cfg_json, params, conf, pid)
    metrics.setdefault("partition-id", pid)  # a malicious client may lie (attack=spoof); the server checks it
    content = RecordDict({"arrays": ArrayRecord(new), "metrics": MetricRecord(metrics)})
    return Message(content, reply_to=msg)


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Answer with the partition id (lets the server map node ids to partitions)."""
    pid = int(context.node_config["partition-id"])
    return Message(RecordDict({"metrics": MetricRecord({"partition-id": pid})}), reply_to=msg)
