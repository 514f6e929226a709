"""The omniscient reference attacker of the Byzantine-FL literature, as a server-side simulation step.

Threat model (ALIE, IPM, sign flipping, Gaussian, Inf, Mimic; Baruch et al. 2019, Xie et al. 2020, Karimireddy et
al. 2022; as ByzFL, Blades and FLPoison simulate it): the f attackers collude and see the round's honest updates
before they answer; all of them send the same vector, computed from those honest updates by ByzFL's attack
(:mod:`fl_mdisc.byzfl_ref`). They know neither the server's probe set nor its thresholds.

**A simulation device.** A real server never does this. We cannot give a client the other clients' updates before
they are sent, so this wrapper stands in for the colluding attackers: it sits outside the reply validator and the
clipping (``ServerSGD(OmniscientAdversary(ReplyValidator([GC|DGC](...))))``), so what it produces meets every
defence exactly as a reply from the attackers would. Per round, with the global model theta::

    honest   = { flatten(theta_k) - flatten(theta) : k sampled, k not an attacker }
    v        = attack(honest)                         (ByzFL, under the seed (run seed, round))
    theta_j  = theta + unflatten(v)                   for every sampled attacker j

The attackers' own replies (an honest update of their data) are discarded. With no honest client or no attacker in
the round, nothing changes. Which sender is an attacker is read from the server's node id -> partition id map (the
identity the validator trusts), never from a claimed id. The honest updates are stacked in partition-id order, not
in arrival order: replies arrive in whatever order Ray finishes them, and an order-dependent attack (Mimic copies
the first honest update; float sums depend on order) would otherwise differ from run to run under one seed.
"""

from __future__ import annotations

from collections.abc import Callable
from logging import INFO

import numpy as np
from flwr.common import log

from fl_mdisc import byzfl_ref

from .base import StrategyWrapper, reply_arrays, set_reply_arrays


class OmniscientAdversary(StrategyWrapper):
    def __init__(self, strategy, attack, malicious, node_to_pid: Callable | None = None, seed: int = 0) -> None:
        super().__init__(strategy)
        self.attack, self.malicious, self.seed = attack, set(int(m) for m in malicious), int(seed)
        self.node_to_pid = node_to_pid  # () -> {node id: partition id}
        self.last: dict = {}

    def aggregate_train(self, server_round, replies):
        replies = list(replies)
        pid_of = (self.node_to_pid() if self.node_to_pid else None) or {}
        bad, good = [], []
        for m in replies:  # one pass, by sender identity (never a Message comparison)
            if not m.has_error():
                (bad if pid_of.get(int(m.metadata.src_node_id)) in self.malicious else good).append(m)
        good.sort(key=lambda m: pid_of.get(int(m.metadata.src_node_id), float("inf")))  # not Ray's arrival order
        self.last = {"attackers": len(bad), "honest": len(good)}
        if bad and good:
            theta = self.current_arrays
            base = byzfl_ref.flatten(theta)
            honest = [byzfl_ref.flatten(reply_arrays(m)) - base for m in good]
            with byzfl_ref.seeded(self.seed * 1_000_003 + int(server_round)):
                v = np.asarray(self.attack(np.stack(honest)), dtype=np.float64)
            sent = byzfl_ref.unflatten((base + v).astype(base.dtype), theta)
            for m in bad:
                set_reply_arrays(m, [a.copy() for a in sent])
            log(INFO, "[fl-mdisc] round %s: %s attackers replaced their replies with %s of %s honest updates",
                server_round, len(bad), type(self.attack).__name__, len(good))
        return self.strategy.aggregate_train(server_round, replies)
