"""ByzFL's reference attacks and aggregators inside our strategies: the adapter equals ByzFL's own call, the
omniscient attacker's reply equals ByzFL's attack on that round's honest replies, bad names are one clear error."""

import byzfl
import numpy as np
import pytest

from fl_mdisc import byzfl_ref
from fl_mdisc.errors import ConfigError
from strategies.base import StrategyWrapper, reply_arrays
from strategies.byzfl import ByzFLAggregation
from strategies.omniscient import OmniscientAdversary

from .flwr_helpers import prime, reply

THETA = [np.arange(6, dtype=np.float32).reshape(2, 3) / 10, np.array([0.5, -0.5, 1.0, 2.0], np.float32)]


def vectors(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(0, 1, (n, 10)).astype(np.float32)


def replies_for(X):
    base = byzfl_ref.flatten(THETA)
    return [reply(byzfl_ref.unflatten(base + x, THETA), i) for i, x in enumerate(X)]


class TestFlatten:
    def test_round_trip_is_exact_with_shapes_and_dtypes(self):
        arrays = [np.ones((2, 3), np.float32) * 0.1, np.array(3.5, np.float32), np.arange(4, dtype=np.float64)]
        back = byzfl_ref.unflatten(byzfl_ref.flatten(arrays), arrays)
        for a, b in zip(arrays, back):
            assert a.shape == b.shape and a.dtype == b.dtype
            np.testing.assert_array_equal(a.astype(np.float32), b.astype(np.float32))

    def test_wrong_length_is_an_error(self):
        with pytest.raises(ValueError, match="does not fit"):
            byzfl_ref.unflatten(np.zeros(5, np.float32), THETA)


class TestAdapter:
    @pytest.mark.parametrize("agg,pre,params", [
        ("cc", [], {"tau": 0.7}), ("geomed", [], {}), ("mda", [], {"f": 1}), ("monna", [], {"f": 1}),
        ("median", [], {}), ("trmean", [], {"f": 1}), ("meamed", [], {"f": 1}), ("multikrum", [], {"f": 1}),
        ("cc", ["nnm"], {"f": 1, "tau": 0.7}), ("average", ["clipping"], {"c": 1.5}), ("geomed", ["arc"], {"f": 1}),
        ("average", ["bucketing"], {"s": 2}),
    ])
    def test_equals_byzfl_on_hand_made_vectors(self, agg, pre, params):
        X = vectors(7)
        X[6] *= 50  # an outlier
        s = ByzFLAggregation(byzfl_ref.make_aggregator(agg, params), byzfl_ref.make_pre(pre, params),
                             reference=lambda: THETA, seed=3, fraction_evaluate=0.0, min_available_nodes=2,
                             min_train_nodes=2)
        arrays, _ = s.aggregate_train(5, replies_for(X))
        got = byzfl_ref.flatten(arrays.to_numpy_ndarrays())
        # ByzFL's own call, by hand, with fresh instances (and the same seed for bucketing's permutation)
        with byzfl_ref.seeded(3 * 1_000_003 + 5):
            v = X.copy()
            for p in byzfl_ref.make_pre(pre, params):
                v = p(v)
            want = byzfl_ref.flatten(THETA) + byzfl_ref.make_aggregator(agg, params)(v)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
        assert [a.shape for a in arrays.to_numpy_ndarrays()] == [a.shape for a in THETA]

    def test_centered_clipping_is_byzfl_class(self):
        assert isinstance(byzfl_ref.make_aggregator("cc", {"tau": 2.0, "L": 1}), byzfl.CenteredClipping)


class _Keep(StrategyWrapper):
    def __init__(self):
        super().__init__(None)

    def aggregate_train(self, server_round, replies):
        self.got = list(replies)
        return None, {}


class TestOmniscient:
    @pytest.mark.parametrize("name,params", [("alie", {"tau": 1.5}), ("ipm", {"tau": 2.0}), ("signflip", {}),
                                             ("mimic", {"epsilon": 0}), ("gaussian", {"mu": 0.0, "sigma": 1.0})])
    def test_attackers_send_byzfl_attack_of_the_honest_replies(self, name, params):
        X = vectors(6, seed=1)
        inner = _Keep()
        adv = OmniscientAdversary(inner, byzfl_ref.make_attack(name, params), malicious=[4, 5],
                                  node_to_pid=lambda: {i + 10: i for i in range(6)}, seed=2)
        prime(adv, THETA)
        adv.aggregate_train(7, replies_for(X))
        with byzfl_ref.seeded(2 * 1_000_003 + 7):
            v = byzfl_ref.make_attack(name, params)(X[:4])
        want = byzfl_ref.flatten(THETA) + v
        for m in inner.got[4:]:
            np.testing.assert_allclose(byzfl_ref.flatten(reply_arrays(m)), want, rtol=0, atol=1e-6)
        for m, x in zip(inner.got[:4], X[:4]):  # honest replies untouched
            np.testing.assert_array_equal(byzfl_ref.flatten(reply_arrays(m)), byzfl_ref.flatten(THETA) + x)
        assert adv.last == {"attackers": 2, "honest": 4}

    def test_honest_updates_enter_the_attack_in_partition_order_not_arrival_order(self):
        """Mimic copies the first honest update: with replies arriving 3, 1, 0, 2 (Ray's order varies run to run),
        the attacker still copies partition 0's update, so one seed gives one run."""
        X = vectors(4, seed=3)
        rs = replies_for(X)
        inner = _Keep()
        adv = OmniscientAdversary(inner, byzfl_ref.make_attack("mimic", {"epsilon": 0}), malicious=[3],
                                  node_to_pid=lambda: {i + 10: i for i in range(4)}, seed=1)
        prime(adv, THETA)
        adv.aggregate_train(2, [rs[3], rs[1], rs[0], rs[2]])
        np.testing.assert_array_equal(byzfl_ref.flatten(reply_arrays(inner.got[0])),
                                      (byzfl_ref.flatten(THETA) + X[0]).astype(np.float32))
        assert not np.allclose(X[0], X[1])

    def test_identity_comes_from_the_sender_not_a_claim(self):
        X = vectors(3, seed=2)
        inner = _Keep()
        adv = OmniscientAdversary(inner, byzfl_ref.make_attack("signflip", {}), malicious=[2],
                                  node_to_pid=lambda: {10: 0, 11: 1, 12: 2})
        prime(adv, THETA)
        adv.aggregate_train(1, replies_for(X))
        np.testing.assert_allclose(byzfl_ref.flatten(reply_arrays(inner.got[2])),
                                   byzfl_ref.flatten(THETA) - X[:2].mean(0), atol=1e-6)

    def test_a_round_without_attackers_is_unchanged(self):
        X = vectors(3)
        inner = _Keep()
        adv = OmniscientAdversary(inner, byzfl_ref.make_attack("ipm", {}), malicious=[9],
                                  node_to_pid=lambda: {10: 0, 11: 1, 12: 2})
        prime(adv, THETA)
        adv.aggregate_train(1, replies_for(X))
        for m, x in zip(inner.got, X):
            np.testing.assert_array_equal(byzfl_ref.flatten(reply_arrays(m)), byzfl_ref.flatten(THETA) + x)


class TestNames:
    @pytest.mark.parametrize("ov,match", [
        (["strategy=byzfl", "strategy.aggregator=krumm"], r"unknown strategy.aggregator 'krumm'; choose one of \['average'"),
        (["strategy=byzfl", "strategy.pre=[nnm,foo]"], r"unknown strategy.pre entry 'foo'; choose one of \['arc', 'bucketing'"),
        (["strategy=dgc", "attack=alie", "attack.optimal=true"], "use strategy=byzfl"),
    ])
    def test_bad_name_is_one_clear_error(self, ov, match):
        from fl_mdisc.config import compose

        with pytest.raises(ConfigError, match=match):
            compose(ov)

    def test_unknown_attack_lists_the_choices(self):
        from fl_mdisc.config import compose

        with pytest.raises(ConfigError, match=r"unknown attack 'alei'.*'alie'"):
            compose(["attack=alei"])

    def test_optimal_only_for_alie_and_ipm(self):
        with pytest.raises(ConfigError, match="alie"):
            byzfl_ref.make_attack("signflip", {"optimal": True})


class TestDefenceF:
    """f comes from what the server is told (assume.f), never from the simulated attackers."""

    def test_per_round_f_from_the_assumption(self):
        from fl_mdisc.assumption import krum_max_f, majority_max_f, per_round_f

        assert per_round_f(1, 5, 5, majority_max_f(5))[0] == 1
        assert per_round_f(10, 100, 10, majority_max_f(10))[0] == 1
        assert per_round_f(3, 10, 10, majority_max_f(10))[0] == 3
        assert per_round_f(8, 10, 10, majority_max_f(10))[0] == 4  # capped: n > 2f
        assert per_round_f(0, 10, 10, majority_max_f(10))[0] == 0
        assert per_round_f(None, 10, 10, majority_max_f(10))[0] == 4  # nothing known: the worst case the rule survives
        assert per_round_f(None, 10, 10, krum_max_f(10))[0] == 3  # Krum: n >= 2f + 3

    def test_strategies_read_the_assumption_not_the_truth(self):
        from fl_mdisc.config import compose
        from strategies.factory import build_base, defence_f

        told = compose(["strategy=multikrum", "fed.num_clients=10", "fed.num_malicious=3", "assume.f=1"])
        assert defence_f(told)[0] == 1 and build_base(told).num_malicious_nodes == 1
        assert build_base(told).num_nodes_to_select == 9
        blind = compose(["strategy=multikrum", "fed.num_clients=10", "fed.num_malicious=1"])
        assert defence_f(blind) == (3, "nothing assumed: the most the rule tolerates with 10 participants")
        byz = compose(["strategy=byzfl", "strategy.aggregator=trmean", "fed.num_clients=10", "fed.num_malicious=1"])
        assert defence_f(byz)[0] == 4
        assert defence_f(compose(["strategy=byzfl", "strategy.f=2", "fed.num_clients=10"]))[0] == 2


class TestFactory:
    @pytest.mark.parametrize("ov", [["strategy.aggregator=cc", "strategy.clip_norm=2.0"],
                                    ["strategy.aggregator=geomed", "strategy.pre=[nnm]"],
                                    ["strategy.aggregator=mda"]])
    def test_byzfl_strategy_with_an_omniscient_attacker_aggregates(self, ov):
        from fl_mdisc.config import compose
        from strategies.factory import build_strategy

        cfg = compose(["strategy=byzfl", "attack=alie", "fed.num_clients=6", *ov])
        outer, _clip, validator = build_strategy(cfg, malicious=[5])
        validator.node_to_pid = {i + 10: i for i in range(6)}
        prime(outer, [np.zeros(4, np.float32)])
        ups = [reply([np.full(4, 0.1 * i, np.float32)], i) for i in range(6)]
        arrays, _ = outer.aggregate_train(1, ups)
        assert np.isfinite(arrays.to_numpy_ndarrays()[0]).all()


class TestPlan:
    def test_reference_attackers_are_the_last_partitions(self, tiny_data_root, tmp_path):
        from fl_mdisc.config import compose, resolve_paths
        from fl_mdisc.experiment import make_plan

        from .conftest import tiny_overrides

        cfg = compose(tiny_overrides(tiny_data_root, tmp_path / "c", tmp_path / "o", "attack=alie", "fed.num_malicious=2"))
        resolve_paths(cfg)
        assert make_plan(cfg).malicious == frozenset({1, 2})


class TestState:
    def test_centered_clipping_keeps_its_centre_and_the_checkpoint_restores_it(self):
        def make():
            return ByzFLAggregation(byzfl_ref.make_aggregator("cc", {"tau": 0.5}), [], reference=lambda: THETA,
                                    fraction_evaluate=0.0, min_available_nodes=2, min_train_nodes=2)

        a = make()
        a.aggregate_train(1, replies_for(vectors(4, seed=1)))
        st = a.state()
        r2 = byzfl_ref.flatten(a.aggregate_train(2, replies_for(vectors(4, seed=2)))[0].to_numpy_ndarrays())
        b = make()
        b.load_state(st)  # a resumed run
        r2b = byzfl_ref.flatten(b.aggregate_train(2, replies_for(vectors(4, seed=2)))[0].to_numpy_ndarrays())
        np.testing.assert_array_equal(r2, r2b)
        fresh = make()  # without the centre the second round differs: the state matters
        r2c = byzfl_ref.flatten(fresh.aggregate_train(2, replies_for(vectors(4, seed=2)))[0].to_numpy_ndarrays())
        assert not np.allclose(r2, r2c)
