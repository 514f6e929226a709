"""Realistic federations: reproducible partial participation, identity binding, colluding attackers, local
training, non-IID partitions and their simulated calibration."""

import time

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.app.message_type import MessageType
from flwr.app.metadata import Metadata
from flwr.serverapp.strategy import FedAvg

from fl_mdisc.burnin import ensure_burnin
from fl_mdisc.config import to_json
from fl_mdisc.errors import ConfigError
from fl_mdisc.data import partition_pool, stream_batch
from fl_mdisc.experiment import make_plan
from fl_mdisc.sampling import participation_index, sample_round, trigger_participants
from strategies.sampling import SampledParticipation
from strategies.validate import ReplyValidator

from .conftest import tiny_cfg
from .flwr_helpers import prime, reply


class TestSampler:
    def test_pure_function_of_seed_round_n_k(self):
        a = [sample_round(3, r, 100, 10) for r in range(1, 50)]
        assert a == [sample_round(3, r, 100, 10) for r in range(1, 50)]  # replays exactly
        assert all(len(s) == 10 == len(set(s)) and list(s) == sorted(s) for s in a)
        assert a != [sample_round(4, r, 100, 10) for r in range(1, 50)]  # the seed redraws it
        assert sample_round(3, 1, 100, 10) != sample_round(3, 2, 100, 10)
        assert sample_round(0, 7, 5, 5) == (0, 1, 2, 3, 4)  # K = N: everyone

    def test_global_random_state_does_not_change_the_draw(self):
        import random

        want = sample_round(1, 5, 50, 7)
        random.seed(123)
        np.random.seed(9)
        random.random()
        assert sample_round(1, 5, 50, 7) == want

    def test_covers_clients_evenly(self):
        n, k, rounds = 100, 10, 3000
        counts = np.zeros(n)
        for r in range(1, rounds + 1):
            counts[list(sample_round(0, r, n, k))] += 1
        expected = rounds * k / n  # 300; binomial sd ~16.4
        assert abs(counts.mean() - expected) < 1e-9
        assert counts.min() > expected - 5 * 16.4 and counts.max() < expected + 5 * 16.4
        # a chi-square test of uniformity at a very lenient level (99 dof: mean 99, sd 14)
        chi2 = ((counts - expected) ** 2 / expected).sum() * (1 - k / n) ** -1
        assert chi2 < 99 + 5 * 14

    def test_participation_index_counts_earlier_draws(self):
        n, k = 20, 4
        for pid in (0, 7, 19):
            j = 0
            for r in range(1, 60):
                assert participation_index(2, r, n, k, pid) == j
                j += pid in sample_round(2, r, n, k)
        assert participation_index(2, 9, 5, 5, 3) == 8  # full participation: round - 1

    def test_trigger_round_has_an_attacker(self):
        mal = set(range(90, 100))
        for r in range(1, 60):
            s = trigger_participants(0, r, 100, 10, mal)
            draw = set(sample_round(0, r, 100, 10))
            assert len(s) == 10 and set(s) & mal
            if draw & mal:
                assert set(s) == draw  # attackers drawn: they fire, nobody is swapped
            else:
                assert len(set(s) - draw) == 1 and (set(s) - draw) <= mal  # one attacker replaced one honest client
        assert trigger_participants(0, 3, 5, 5, {4}) == (0, 1, 2, 3, 4)


def _node_reply(pid, node, arrays, claimed=None):
    md = Metadata(run_id=1, message_id=f"m{node}", src_node_id=0, dst_node_id=node, reply_to_message_id="",
                  group_id="", created_at=time.time(), ttl=3600, message_type=MessageType.TRAIN)
    metrics = {"num-examples": 100, "partition-id": pid if claimed is None else claimed}
    return Message(RecordDict({"arrays": ArrayRecord([np.asarray(a, dtype=np.float32) for a in arrays]),
                               "metrics": MetricRecord(metrics)}), reply_to=Message(RecordDict(), metadata=md))


class TestIdentity:
    def _validator(self):
        v = ReplyValidator(FedAvg())
        v.node_to_pid = {100 + p: p for p in range(4)}
        v.expected = {100, 101, 102, 103}
        prime(v, [np.zeros(3)])
        return v

    def test_spoofed_partition_id_is_dropped_and_counted(self):
        v = self._validator()
        good = [_node_reply(p, 100 + p, [np.full(3, 1.0)]) for p in range(3)]
        spoof = _node_reply(3, 103, [np.full(3, 50.0)], claimed=0)  # node of partition 3 claims to be partition 0
        arrays, _ = v.aggregate_train(1, good + [spoof])
        assert len(v.dropped) == 1 and v.dropped[0]["spoofed"] and v.dropped[0]["partition-id"] == 3
        assert "claims partition 0" in v.dropped[0]["reason"]
        assert np.allclose(arrays.to_numpy_ndarrays()[0], 1.0)  # the spoofed update never reached the model

    def test_duplicate_and_unsampled_senders_are_dropped(self):
        v = self._validator()
        v.expected = {100, 101}
        reps = [_node_reply(0, 100, [np.ones(3)]), _node_reply(0, 100, [np.ones(3)]), _node_reply(2, 102, [np.ones(3)])]
        v.aggregate_train(1, reps)
        reasons = sorted(d["reason"] for d in v.dropped)
        assert len(reasons) == 2 and "duplicate reply from node 100" in reasons[0] and "not sampled" in reasons[1]


    def test_a_dead_nodes_error_reply_is_one_failure_of_its_partition(self, monkeypatch):
        """The SuperLink answers for a node whose heartbeat expired: source SUPERLINK_NODE_ID, replying to the
        message sent to that node. It is that node's failure (its partition, Flower's reason), not a dropped reply
        from an unsampled node 1."""
        from flwr.common.constant import SUPERLINK_NODE_ID
        from flwr.server.superlink.linkstate.utils import create_message_error_unavailable_res_message
        from flwr.supercore.task_identity import TaskIdentity

        for k, val in (("_run_id", 1), ("_node_id", 0), ("_task_id", 1)):  # what a ServerApp run sets
            monkeypatch.setattr(TaskIdentity, k, val)
        v = self._validator()
        sent = [Message(RecordDict(), dst_node_id=100 + p, message_type=MessageType.TRAIN) for p in range(3)]
        for i, m in enumerate(sent):  # what the Grid does when it pushes them
            m.metadata.__dict__["_message_id"] = f"sent-{i}"
        v.sent, v.expected = sent, {100, 101, 102}
        dead = create_message_error_unavailable_res_message(sent[1].metadata, "node_unavail")
        assert dead.metadata.src_node_id == SUPERLINK_NODE_ID
        good = [_node_reply(p, 100 + p, [np.full(3, 1.0)]) for p in (0, 2)]
        arrays, _ = v.aggregate_train(1, good + [dead])
        assert v.dropped == [] and len(v.failed) == 1 and v.failed[0]["partition-id"] == 1
        assert "Node Unavailable" in v.failed[0]["reason"]
        assert np.allclose(arrays.to_numpy_ndarrays()[0], 1.0)


class _Grid:
    def get_node_ids(self):
        return [555, 444, 333]


class TestSampledParticipation:
    def test_messages_go_to_the_drawn_partitions_nodes(self, monkeypatch):
        from flwr.supercore.task_identity import TaskIdentity

        monkeypatch.setattr(TaskIdentity, "_run_id", 1)  # what a ServerApp run sets
        monkeypatch.setattr(TaskIdentity, "_node_id", 0)
        monkeypatch.setattr(TaskIdentity, "_task_id", 1)
        s = SampledParticipation(FedAvg(), lambda rnd, phase: (0, 2) if phase == "accumulate" else (1,))
        s.set_nodes({555: 0, 444: 1, 333: 2})
        conf = ConfigRecord({"phase": "accumulate"})
        msgs = list(s.configure_train(4, ArrayRecord([np.zeros(2, dtype=np.float32)]), conf, _Grid()))
        assert [m.metadata.dst_node_id for m in msgs] == [555, 333] and s.sampled == (0, 2)
        assert msgs[0].content["config"]["server-round"] == 4 and "arrays" in msgs[0].content
        msgs = list(s.configure_train(5, ArrayRecord([np.zeros(2, dtype=np.float32)]),
                                      ConfigRecord({"phase": "trigger"}), _Grid()))
        assert [m.metadata.dst_node_id for m in msgs] == [444]

    def test_a_node_not_online_is_skipped_and_the_others_keep_their_draw(self, monkeypatch):
        from flwr.supercore.task_identity import TaskIdentity

        for k, val in (("_run_id", 1), ("_node_id", 0), ("_task_id", 1)):
            monkeypatch.setattr(TaskIdentity, k, val)

        class Online(_Grid):
            def __init__(self, ids):
                self.ids = ids

            def get_node_ids(self):
                return self.ids

        s = SampledParticipation(FedAvg(), lambda rnd, phase: (0, 1, 2) if rnd % 2 else (1, 2))
        s.set_nodes({555: 0, 444: 1, 333: 2})
        arr = ArrayRecord([np.zeros(2, dtype=np.float32)])
        msgs = list(s.configure_train(1, arr, ConfigRecord({"phase": "accumulate"}), Online([555, 333])))
        assert [m.metadata.dst_node_id for m in msgs] == [555, 333] and s.sampled == (0, 2) and s.unavailable == (1,)
        msgs = list(s.configure_train(2, arr, ConfigRecord({"phase": "accumulate"}), Online([555, 333])))
        assert s.sampled == (2,) and s.unavailable == (1,)  # still down: still skipped, the draw itself unchanged
        msgs = list(s.configure_train(3, arr, ConfigRecord({"phase": "accumulate"}), Online([555, 444, 333])))
        assert s.sampled == (0, 1, 2) and s.unavailable == ()  # listed online again: drawn and sent again


def _cfg(tiny, *extra):
    return tiny_cfg(tiny, *extra)


class TestStreamsAndAttackers:
    def test_stream_batches_follow_participation(self, tiny):
        from clients import honest

        cfg = _cfg(tiny, "fed.num_clients=6", "fed.clients_per_round=2", "attack=none", "fed.num_malicious=0",
                   "fed.batch_size=20", "strategy=st")
        plan = make_plan(cfg)
        seen = {}

        def spy(part, bs, seed, pid, step):
            seen[pid] = step
            return stream_batch(part, bs, seed, pid, step)

        entry = ensure_burnin(cfg, log=lambda m: None)
        from fl_mdisc.burnin import load_model
        from fl_mdisc.models import get_params

        params = get_params(load_model(cfg, entry["start"], entry["start_sha"]))
        orig = honest.stream_batch
        honest.stream_batch = spy
        try:
            for r in range(1, 12):
                for pid in sample_round(int(cfg.seed), r, 6, 2):
                    conf = {"start-path": entry["start"], "start-sha": entry["start_sha"], "server-round": r,
                            "phase": "accumulate"}
                    honest.train_honest(to_json(cfg), params, conf, pid)
                    assert seen[pid] == sum(pid in sample_round(int(cfg.seed), q, 6, 2) for q in range(1, r))
        finally:
            honest.stream_batch = orig
        # within one pass no sample repeats: the first passes' batches of a client are disjoint
        part = plan.partitions[0]
        per_pass = len(part) // 20
        batches = np.concatenate([stream_batch(part, 20, int(cfg.seed), 0, j) for j in range(per_pass)])
        assert len(set(batches)) == len(batches)

    def test_colluding_attackers_share_validation_and_trigger(self, tiny):
        from clients import runtime

        cfg = _cfg(tiny, "fed.num_clients=6", "fed.num_malicious=3", "attack=accumulative", "fed.batch_size=20",
                   "++attack.val_size=40", "++attack.trigger_size=20")
        plan = make_plan(cfg)
        assert plan.malicious == {3, 4, 5}
        v, t, _ = plan.attacker[3]
        for pid in (4, 5):
            assert np.array_equal(plan.attacker[pid][0], v) and np.array_equal(plan.attacker[pid][1], t)
            assert set(plan.attacker[pid][2]) <= set(plan.partitions[pid])  # its own stream
            assert not set(plan.attacker[pid][2]) & (set(v) | set(t))
        entry = ensure_burnin(cfg, log=lambda m: None)
        trig = [runtime.adversarial_trigger(to_json(cfg), pid, entry["start"], entry["start_sha"]) for pid in (3, 4, 5)]
        assert all(torch.equal(trig[0], x) for x in trig[1:])  # one trigger, fired by all

    def test_pool_mode_gives_every_client_a_partition_and_keeps_clean_partitions(self, tiny):
        over = ("fed.num_clients=8", "fed.num_malicious=2", "fed.attacker_data=pool", "fed.batch_size=20",
                "++attack.val_size=40", "++attack.trigger_size=20")
        poisoned = make_plan(_cfg(tiny, "attack=lambda_update", *over))
        att = poisoned.attacker[6]
        assert np.array_equal(att[2], poisoned.partitions[6]) and len(att[0]) == 40 and len(att[1]) == 20
        assert not (set(att[0]) | set(att[1])) & set(np.concatenate(poisoned.partitions))
        clean = make_plan(_cfg(tiny, "attack=none", *over))  # same partitions: the clean oracle differs only in roles
        assert all(np.array_equal(a, b) for a, b in zip(clean.partitions, poisoned.partitions))
        # attack=none has no sizes: it carves the attack configs' defaults
        from omegaconf import OmegaConf

        from fl_mdisc.config import conf_dir
        from fl_mdisc.experiment import ATTACKER_TRIGGER_SIZE, ATTACKER_VAL_SIZE

        for name in ("lambda_update", "accumulative"):
            a = OmegaConf.load(conf_dir() / "attack" / f"{name}.yaml")
            assert (a.val_size, a.trigger_size) == (ATTACKER_VAL_SIZE, ATTACKER_TRIGGER_SIZE)
        cfg = _cfg(tiny, "attack=none", *over)
        del cfg.attack["val_size"], cfg.attack["trigger_size"]
        with pytest.raises(Exception, match="cannot give the attackers 600 images"):
            make_plan(cfg)  # 600 images carved (the tiny pool is too small for them: the clear error)

    def test_a_retired_key_names_its_replacement(self, tiny):
        with pytest.raises(ConfigError, match="fed.malicious_fraction is retired: set fed.num_malicious"):
            _cfg(tiny, "fed.num_clients=10", "fed.malicious_fraction=0.2", "attack=none")

    def test_fedavg_local_steps_client_equals_a_hand_rolled_sgd_loop(self, tiny):
        from clients.honest import batch_tensors, train_honest
        from fl_mdisc.burnin import load_model
        from fl_mdisc.models import get_params

        cfg = _cfg(tiny, "attack=none", "fed.num_malicious=0", "fed.local_steps=4", "fed.client_lr=0.05",
                   "fed.server_lr=1.0", "fed.server_momentum=0")
        entry = ensure_burnin(cfg, log=lambda m: None)
        model = load_model(cfg, entry["start"], entry["start_sha"])
        params = get_params(model)
        conf = {"start-path": entry["start"], "start-sha": entry["start_sha"], "server-round": 2, "phase": "accumulate"}
        new, met = train_honest(to_json(cfg), params, conf, 1)
        plan = make_plan(cfg)
        idx = stream_batch(plan.partitions[1], int(cfg.fed.batch_size), int(cfg.seed), 1, 1)
        x, y = batch_tensors(cfg, plan, idx, 2, 1)
        model.train()
        ps = [p for p in model.parameters() if p.requires_grad]
        for _ in range(4):  # plain SGD, no momentum, on the round's batch
            model.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            with torch.no_grad():
                for p in ps:
                    p -= 0.05 * p.grad
        assert all(np.allclose(a, p.detach().numpy(), atol=1e-6) for a, p in zip(new, ps))
        assert not all(np.allclose(a, b) for a, b in zip(new, params))


class TestPartitions:
    def test_pathological_k_classes(self):
        pool = np.arange(3000)
        labels = np.random.default_rng(0).integers(0, 10, 3000)
        parts = partition_pool(pool, labels, 10, "pathological", seed=1, classes_per_client=2)
        cat = np.concatenate(parts)
        assert len(cat) == len(set(cat)) and all(len(set(labels[p])) <= 2 for p in parts)

    def test_dirichlet_min_size(self):
        pool = np.arange(4000)
        labels = np.random.default_rng(0).integers(0, 10, 4000)
        parts = partition_pool(pool, labels, 10, "dirichlet", alpha=0.1, seed=0, min_size=100)
        assert min(len(p) for p in parts) >= 100


def test_non_iid_calibration_simulates_label_skew(tiny):
    from fl_mdisc.calib_sim import SimulatedFederation as _Sim, honest_per_round, label_skew, simulated_population

    cfg = _cfg(tiny, "strategy=dgc_paper", "fed.num_clients=10", "fed.clients_per_round=5", "fed.num_malicious=2",
               "fed.partition=dirichlet", "fed.dirichlet_alpha=0.1", "fed.batch_size=20", "attack=none",
               "fed.min_partition_size=5")
    assert honest_per_round(cfg) == 5  # the server assumes nothing: every participant is simulated honest
    told = _cfg(tiny, "strategy=dgc_paper", "fed.num_clients=10", "fed.clients_per_round=5", "assume.f=2",
                "fed.partition=dirichlet", "fed.dirichlet_alpha=0.1", "fed.batch_size=20", "fed.min_partition_size=5")
    assert honest_per_round(told) == 4  # told f = 2 of 10: 5 - round(5 * 2 / 10)
    assert simulated_population(cfg) == 100  # many clients: the honest statistic varies between clients
    props, sizes = label_skew(cfg, 30, 0, len(make_plan(cfg).ds.y_train))
    assert props.shape == (30, 10) and np.allclose(props.sum(1), 1) and props.max(1).mean() > 0.4  # alpha 0.1: peaked
    assert sizes.min() >= 5 and len(set(sizes)) > 1
    entry = ensure_burnin(cfg, log=lambda m: None)
    sim = _Sim(cfg, entry)
    plan = make_plan(cfg)
    k = int(np.argmax(sim.skew.max(1)))  # the most peaked simulated client
    b = sim.batch(3, k)
    assert len(b) == min(20, int(sim.sizes[k])) and set(b) <= set(plan.split.calib)
    top = int(np.argmax(sim.skew[k]))
    assert np.mean(plan.ds.y_train[b] == top) > 0.3


def test_round_zero_evaluation_is_computed_once_per_checkpoint(tmp_path, tiny):
    """theta_start's test accuracy is the same for every cell of a sweep: computed once, then read back."""
    from types import SimpleNamespace

    from strategies.server_app import start_evaluation

    cfg = tiny_cfg(tiny)
    ds = SimpleNamespace(x_test=np.zeros((4, 3, 2, 2), np.uint8), y_test=np.arange(4))
    entry = {"start_sha": "abc", "dir": str(tmp_path)}
    written, calls = [], []

    class Rec:
        def write(self, row):
            written.append(row)

    def compute():
        calls.append(1)
        row = {"round": 0, "accuracy": 12.5, "test_loss": 2.0, "phase": "start"}
        Rec().write(row)
        return row

    first = start_evaluation(entry, cfg, "cpu", ds, compute, Rec())
    again = start_evaluation(entry, cfg, "cpu", ds, compute, Rec())
    assert first == again and written == [first, first] and len(calls) == 1
    other = SimpleNamespace(x_test=ds.x_test, y_test=np.arange(4)[::-1].copy())  # another test set: recomputed
    start_evaluation(entry, cfg, "cpu", other, compute, Rec())
    start_evaluation({**entry, "start_sha": "def"}, cfg, "cpu", ds, compute, Rec())  # another checkpoint
    assert len(calls) == 3


def test_the_registered_node_map_binds_partitions_and_refuses_gaps(tmp_path):
    """The Deployment Engine's map (node id -> partition, written when each key was registered) is what the server
    trusts: a node whose replies claim another partition is then dropped as spoofed (TestIdentity)."""
    import json

    from fl_mdisc.errors import ConfigError
    from strategies.sampling import registered_partition_ids

    path = tmp_path / "node-map.json"
    path.write_text(json.dumps({"4423867934695633363": 0, "77": 1, "9": 2}))
    assert registered_partition_ids(str(path), [9, 77, 4423867934695633363], 3) == {4423867934695633363: 0, 77: 1, 9: 2}
    with pytest.raises(ConfigError, match="online nodes \\[5\\] are not in it"):
        registered_partition_ids(str(path), [9, 77, 5], 3)
    path.write_text(json.dumps({"77": 1, "9": 1}))
    with pytest.raises(ConfigError, match="does not cover partitions 0..1 once each"):
        registered_partition_ids(str(path), [9, 77], 2)
