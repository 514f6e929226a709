import numpy as np
import pytest
from flwr.app import ArrayRecord
from flwr.serverapp.strategy import FedAvg, FedAvgM

from strategies.clipping import dgc_bound, dgc_factor, flagged_factor, gc_factor, l2_norm
from strategies.dgc import DiscrepancyAwareClipping, PaperGate
from strategies.gc import GradientClipping
from strategies.server_opt import ServerSGD
from strategies.validate import ReplyValidator

from .flwr_helpers import prime, reply


def fedavg():
    return FedAvg(fraction_evaluate=0.0, min_available_nodes=2, min_train_nodes=2)


class TestClippingMaths:
    def test_gc_factor(self):
        assert gc_factor(5.0, 1.0) == pytest.approx(0.2)
        assert gc_factor(0.5, 1.0) == 1.0

    def test_dgc_bound_and_factor(self):
        assert dgc_bound(2.0, md=0.5, P=1.0) == 2.0
        assert dgc_bound(2.0, md=4.0, P=1.0) == pytest.approx(0.5)
        assert dgc_factor(1.0, 2.0, md=0.5, P=1.0, gc_fac=0.123) == 0.123  # reuse GC's factor
        assert dgc_factor(1.0, 2.0, md=4.0, P=1.0, gc_fac=1.0) == pytest.approx(0.5)

    def test_scale_mode_shrinks_small_flagged_updates(self):
        # norm 0.3 < C = 2: clip mode cannot touch it (bound 0.5 > 0.3), scale mode shrinks it by P/MD
        assert dgc_factor(0.3, 2.0, md=4.0, P=1.0, gc_fac=1.0, mode="clip") == 1.0
        assert dgc_factor(0.3, 2.0, md=4.0, P=1.0, gc_fac=1.0, mode="scale") == pytest.approx(0.25)
        assert dgc_bound(2.0, md=4.0, P=1.0, norm=0.3, mode="scale") == pytest.approx(0.075)
        # above C both modes give the same factor; below P both reuse GC's factor
        f_clip = dgc_factor(8.0, 2.0, md=4.0, P=1.0, gc_fac=0.25, mode="clip")
        assert dgc_factor(8.0, 2.0, md=4.0, P=1.0, gc_fac=0.25, mode="scale") == pytest.approx(f_clip)
        assert dgc_factor(0.3, 2.0, md=0.5, P=1.0, gc_fac=0.77, mode="scale") == 0.77

    def test_unknown_mode_is_one_clear_error(self):
        with pytest.raises(ValueError, match="choose one of"):
            dgc_factor(0.3, 2.0, md=4.0, P=1.0, gc_fac=1.0, mode="bogus")


class TestGC:
    def test_hand_made_replies(self):
        s = GradientClipping(fedavg(), clip_norm=1.0)
        prime(s, [np.zeros(3)])
        arrays, _ = s.aggregate_train(1, [reply([[3, 4, 0]], 0), reply([[0.3, 0.4, 0]], 1)])
        np.testing.assert_allclose(arrays.to_numpy_ndarrays()[0], [0.45, 0.6, 0.0], rtol=1e-6)
        assert [e["factor"] for e in s.client_log] == pytest.approx([0.2, 1.0])

    def test_relative_to_global_model(self):
        s = GradientClipping(fedavg(), clip_norm=1.0)
        prime(s, [np.array([1.0, 1.0])])
        arrays, _ = s.aggregate_train(1, [reply([[1 + 6, 1 + 8]], 0), reply([[1, 1]], 1)])
        np.testing.assert_allclose(arrays.to_numpy_ndarrays()[0], [1 + 0.3, 1 + 0.4], rtol=1e-6)


class TestDGC:
    def _dgc(self, mds, P=1.0, C=1.0, step_scale=1.0, mode="clip"):
        calls = []

        def probe(cands):  # the last candidate is theta_t itself: MD(theta_t) = 0, so s_k = MD_k
            calls.append([c[0].copy() for c in cands])
            return list(mds) + [0.0]

        s = DiscrepancyAwareClipping(fedavg(), C, PaperGate(P, 0.0), probe_md=probe, step_scale=step_scale, mode=mode)
        return s, calls

    def test_equals_gc_when_md_below_threshold(self):
        ups = [reply([[3, 4, 0]], 0), reply([[0.3, 0.4, 0]], 1)]
        gc = GradientClipping(fedavg(), 1.0)
        prime(gc, [np.zeros(3)])
        a_gc = gc.aggregate_train(1, ups)[0].to_numpy_ndarrays()[0]
        dgc, _ = self._dgc([0.2, 0.9])
        prime(dgc, [np.zeros(3)])
        ups = [reply([[3, 4, 0]], 0), reply([[0.3, 0.4, 0]], 1)]
        a_dgc = dgc.aggregate_train(1, ups)[0].to_numpy_ndarrays()[0]
        assert np.array_equal(a_gc, a_dgc)  # bit-identical
        assert not any(e["flagged"] for e in dgc.client_log)

    def test_shrinks_bound_when_md_exceeds_threshold(self):
        dgc, calls = self._dgc([4.0, 0.5], P=1.0, C=1.0, step_scale=0.1)
        prime(dgc, [np.zeros(3)])
        arrays, _ = dgc.aggregate_train(1, [reply([[3, 4, 0]], 0), reply([[0.3, 0.4, 0]], 1)])
        # client 0: GC-clipped to norm 1, MD 4 > P=1 -> bound C*P/MD = 0.25 -> update [0.15, 0.2, 0]
        np.testing.assert_allclose(arrays.to_numpy_ndarrays()[0], [(0.15 + 0.3) / 2, (0.2 + 0.4) / 2, 0], rtol=1e-6)
        log = {e["partition-id"]: e for e in dgc.client_log}
        assert log[0]["flagged"] and log[0]["bound"] == pytest.approx(0.25)
        assert not log[1]["flagged"] and log[1]["bound"] == 1.0
        # MD measured on theta_t + eta * (GC-clipped update)
        np.testing.assert_allclose(calls[0][0], [0.06, 0.08, 0.0], rtol=1e-6)

    def test_scale_mode_on_replies(self):
        dgc, _ = self._dgc([4.0, 0.5], P=1.0, C=1.0, mode="scale")
        prime(dgc, [np.zeros(3)])
        arrays, _ = dgc.aggregate_train(1, [reply([[0.3, 0.4, 0]], 0), reply([[0.3, 0.4, 0]], 1)])
        # client 0: norm 0.5 < C, flagged (MD 4 > P 1) -> scaled by 1/4; client 1 untouched
        np.testing.assert_allclose(arrays.to_numpy_ndarrays()[0], [(0.075 + 0.3) / 2, (0.1 + 0.4) / 2, 0], rtol=1e-6)
        log = {e["partition-id"]: e for e in dgc.client_log}
        assert log[0]["factor"] == pytest.approx(0.25) and log[0]["bound"] == pytest.approx(0.125)
        assert log[1]["factor"] == 1.0

    def test_threshold_grows_with_rounds(self):
        gate = PaperGate(0.5, 0.02)
        assert gate(1, [0], [0.0])[0][2]["P"] == pytest.approx(0.5)
        assert gate(11, [0], [0.0])[0][2]["P"] == pytest.approx(0.7)
        assert gate(1, [0, 1], [0.4, 1.0]) == [(False, 1.0, {"P": 0.5}), (True, 0.5, {"P": 0.5})]  # r = P / s

    def test_increase_statistic_subtracts_md_of_theta_t(self):
        # probe "MD" of a model = its first coordinate; theta_t = (0.5, 0, 0) -> MD(theta_t) = 0.5
        s = DiscrepancyAwareClipping(fedavg(), 10.0, PaperGate(0.2, 0.0), probe_md=lambda c: [float(p[0][0]) for p in c],
                                     step_scale=1.0)
        prime(s, [np.array([0.5, 0.0, 0.0], dtype=np.float32)])
        s.aggregate_train(1, [reply([[0.6, 0, 0]], 0), reply([[1.5, 0, 0]], 1)])
        log = {e["partition-id"]: e for e in s.client_log}
        assert log[0]["md_base"] == pytest.approx(0.5) and log[0]["stat"] == pytest.approx(0.1)
        assert not log[0]["flagged"] and log[0]["factor"] == 1.0  # GC's own factor, bit-identical to GC
        assert log[1]["stat"] == pytest.approx(1.0) and log[1]["flagged"]
        assert log[1]["bound"] == pytest.approx(10.0 * 0.2 / 1.0)  # C * P / s; the norm 1.0 stays below it
        with pytest.raises(ValueError, match="needs a probe_md"):
            DiscrepancyAwareClipping(fedavg(), 1.0, PaperGate(0.1, 0.0), probe_md=None)

    def test_history_gate_through_the_strategy(self):
        # probe "MD" = first coordinate, theta_t = 0: s_k = 0.1, 0.12, 0.08, 0.11, 2.0 -> only the last is flagged,
        # clipped to C * kappa / h
        from fl_mdisc.history import HistoryGate

        s = DiscrepancyAwareClipping(fedavg(), 10.0, HistoryGate(pool_rounds=2, kappa=3.5),
                                     probe_md=lambda c: [float(p[0][0]) for p in c], step_scale=1.0)
        prime(s, [np.zeros(3, dtype=np.float32)])
        s.aggregate_train(1, [reply([[v, 0, 0]], i) for i, v in enumerate((0.1, 0.12, 0.08, 0.11, 2.0))])
        log = {e["partition-id"]: e for e in s.client_log}
        assert [log[i]["flagged"] for i in range(5)] == [False] * 4 + [True]
        assert all(log[i]["factor"] == 1.0 for i in range(4))  # GC's own factor: norms below C
        h = log[4]["score"]
        assert log[4]["bound"] == pytest.approx(10.0 * 3.5 / h)
        assert log[4]["factor"] == pytest.approx(min(1.0, 10.0 * 3.5 / h / 2.0))


class TestFlaggedFactor:
    def test_clip_and_scale(self):
        assert flagged_factor(4.0, 2.0, 0.5, gc_fac=0.5, mode="clip") == pytest.approx(0.25)  # bound C r = 1
        assert flagged_factor(0.3, 2.0, 0.25, gc_fac=1.0, mode="clip") == 1.0  # the bound 0.5 exceeds the norm
        assert flagged_factor(0.3, 2.0, 0.25, gc_fac=1.0, mode="scale") == pytest.approx(0.25)
        assert flagged_factor(4.0, 2.0, 0.5, gc_fac=0.5, mode="clip") == dgc_factor(4.0, 2.0, md=2.0, P=1.0, gc_fac=0.5)


class TestValidatorMetricKeys:
    def test_client_specific_metrics_are_set_aside_not_fatal(self):
        v = ReplyValidator(fedavg())
        prime(v, [np.zeros(2)])
        arrays, _ = v.aggregate_train(1, [reply([[1, 0]], 0), reply([[0, 1]], 1, extra={"attack-norm": 3.0})])
        assert arrays is not None  # Flower refuses MetricRecords with different keys; the validator aligns them
        assert v.extra_metrics == {1: {"attack-norm": 3.0}}


class TestLinfClipping:
    def test_linf_norm_and_factor_on_replies(self):
        from strategies.clipping import linf_norm

        assert linf_norm([np.array([0.1, -0.7]), np.array([[0.2]])]) == pytest.approx(0.7)
        s = GradientClipping(fedavg(), clip_norm=0.01, norm="linf")
        prime(s, [np.zeros(3, dtype=np.float32)])
        arrays, _ = s.aggregate_train(1, [reply([[0.04, -0.02, 0]], 0), reply([[0.005, 0, 0]], 1)])
        # client 0: max |.| = 0.04 -> factor 0.25 -> (0.01, -0.005, 0); client 1 untouched
        np.testing.assert_allclose(arrays.to_numpy_ndarrays()[0], [(0.01 + 0.005) / 2, -0.0025, 0], rtol=1e-5)
        log = {e["partition-id"]: e for e in s.client_log}
        assert log[0]["norm"] == pytest.approx(0.04) and log[0]["factor"] == pytest.approx(0.25)
        with pytest.raises(ValueError, match="unknown norm"):
            GradientClipping(fedavg(), 1.0, norm="l1")


class TestMultiLayerClipping:
    """Every layer counts in the norm: an update of two arrays (3, 0) and (4,) has norm 5."""

    def test_gc_norm_spans_every_layer(self):
        s = GradientClipping(fedavg(), clip_norm=1.0)
        prime(s, [np.zeros(2), np.zeros(1)])
        arrays, _ = s.aggregate_train(1, [reply([[3, 0], [4]], 0), reply([[0, 0], [0]], 1)])
        a, b = arrays.to_numpy_ndarrays()
        np.testing.assert_allclose(a, [0.3, 0.0], rtol=1e-6)  # (3, 0) * 0.2 / 2
        np.testing.assert_allclose(b, [0.4], rtol=1e-6)
        assert {e["partition-id"]: e["norm"] for e in s.client_log}[0] == pytest.approx(5.0)

    def test_dgc_candidate_and_bound_span_every_layer(self):
        seen = []

        def probe(cands):
            seen.extend(cands)
            return [4.0, 0.5, 0.0]  # the last: theta_t itself

        s = DiscrepancyAwareClipping(fedavg(), 1.0, PaperGate(1.0, 0.0), probe_md=probe, step_scale=1.0)
        prime(s, [np.zeros(2), np.zeros(1)])
        arrays, _ = s.aggregate_train(1, [reply([[3, 0], [4]], 0), reply([[0, 0], [0.1]], 1)])
        # client 0: norm 5, GC factor 0.2 -> candidate (0.6, 0), (0.8); MD 4 > P 1 -> bound 0.25 -> factor 0.05
        np.testing.assert_allclose(seen[0][1], [0.8], rtol=1e-6)
        a, b = arrays.to_numpy_ndarrays()
        np.testing.assert_allclose(a, [0.15 / 2, 0.0], rtol=1e-6)
        np.testing.assert_allclose(b, [(0.2 + 0.1) / 2], rtol=1e-6)


class TestServerSGD:
    @pytest.mark.parametrize("lr,momentum", [(0.1, 0.9), (0.5, 0.3), (1.0, 0.0)])
    def test_equals_flower_fedavgm(self, lr, momentum):
        rng = np.random.default_rng(0)
        theta = [rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32)]
        ours = ServerSGD(fedavg(), lr=lr, momentum=momentum)
        ref = FedAvgM(fraction_evaluate=0.0, min_available_nodes=2, min_train_nodes=2, server_learning_rate=lr,
                      server_momentum=momentum)
        ref.current_arrays = ArrayRecord([t.copy() for t in theta])
        cur = theta
        for rnd in range(1, 4):
            ups = [[t + rng.normal(size=t.shape).astype(np.float32) for t in cur] for _ in range(2)]
            prime(ours, cur)
            a1 = ours.aggregate_train(rnd, [reply(u, i) for i, u in enumerate(ups)])[0].to_numpy_ndarrays()
            a2 = ref.aggregate_train(rnd, [reply(u, i) for i, u in enumerate(ups)])[0].to_numpy_ndarrays()
            for x, y in zip(a1, a2):
                np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
            cur = a1


class TestReplyValidator:
    def _run(self, replies):
        v = ReplyValidator(fedavg())
        prime(v, [np.zeros(3), np.zeros(2)])
        out, _ = v.aggregate_train(1, replies)
        return v, out

    @pytest.mark.parametrize("bad,reason", [
        (lambda: reply([[np.nan, 0, 0], [0, 0]], 1), "non-finite"),
        (lambda: reply([[np.inf, 0, 0], [0, 0]], 1), "non-finite"),
        (lambda: reply([[0, 0, 0]], 1), "wrong number"),
        (lambda: reply([[0, 0, 0, 0], [0, 0]], 1), "wrong shape"),
        (lambda: reply([[0, 0, 0], [0, 0]], 1, dtype=np.float64), "wrong dtype"),
        (lambda: reply([[0, 0, 0], [0, 0]], 1, num_examples=-5), "num-examples"),
        (lambda: reply([[0, 0, 0], [0, 0]], 1, num_examples=10**9), "num-examples"),
    ])
    def test_hostile_reply_dropped_counted_and_model_unchanged(self, bad, reason):
        good = reply([[1, 2, 3], [4, 5]], 0)
        v, out = self._run([bad(), good])
        assert len(v.dropped) == 1 and reason in v.dropped[0]["reason"] and v.dropped[0]["partition-id"] == 1
        np.testing.assert_allclose(out.to_numpy_ndarrays()[0], [1, 2, 3])

    def test_all_dropped_gives_no_update(self):
        v, out = self._run([reply([[np.nan, 0, 0], [0, 0]], 0)])
        assert out is None and len(v.dropped) == 1

    def test_sorted_by_partition(self):
        seen = []

        class Spy(FedAvg):
            def aggregate_train(self, rnd, replies):
                seen.extend(int(m.content["metrics"]["partition-id"]) for m in replies)
                return super().aggregate_train(rnd, replies)

        v = ReplyValidator(Spy(fraction_evaluate=0.0))
        prime(v, [np.zeros(1)])
        v.aggregate_train(1, [reply([[1]], 2), reply([[1]], 0), reply([[1]], 1)])
        assert seen == [0, 1, 2]


class TestFactory:
    def test_uncalibrated_strategy_is_one_clear_error(self):
        from fl_mdisc.config import compose
        from strategies.factory import build_strategy

        with pytest.raises(ValueError, match="apply_calibration"):
            build_strategy(compose(["strategy=gc"]))

    @pytest.mark.parametrize("name", ["st", "gc", "gc_linf", "dgc", "dgc_scale", "dgc_linf", "median", "trimmed_mean",
                                      "multikrum"])
    def test_every_strategy_aggregates_hand_made_replies(self, name):
        from fl_mdisc.config import compose
        from strategies.factory import build_strategy

        ov = [f"strategy={name}"]
        if name.startswith("dgc"):
            ov += ["strategy.gate=paper", "strategy.mu=0.5", "strategy.tau=0"]
        if name in ("gc", "dgc", "dgc_scale"):
            ov += ["strategy.clip_norm=2.0"]
        cfg = compose(ov)
        outer, clip, validator = build_strategy(cfg, probe_md=lambda cands: [0.1] * len(cands))
        theta = [np.zeros(4, np.float32)]
        prime(outer, theta)
        ups = [reply([np.full(4, i, np.float32)], i, extra={"md-client": 0.1}) for i in range(5)]
        ups.append(reply([np.full(4, 1e6, np.float32)], 5, extra={"md-client": 0.1}))  # an outlier
        arrays, _ = outer.aggregate_train(1, ups)
        out = arrays.to_numpy_ndarrays()[0]
        assert np.isfinite(out).all()
        # server SGD: theta - lr * (theta - aggregate) on the first round (momentum buffer = pseudo-gradient)
        if name in ("median", "trimmed_mean", "multikrum"):
            assert abs(out[0]) < 1.0  # robust aggregators ignore the 1e6 outlier


class TestFactoryServerStep:
    def test_server_lr_and_momentum_reach_the_server_step(self):
        # st = FedAvg + server SGD: v_1 = d_1, v_2 = beta v_1 + d_2, theta <- theta - lr v (hand maths, 2 rounds)
        from fl_mdisc.config import compose
        from strategies.factory import build_strategy

        outer, _clip, _v = build_strategy(compose(["strategy=st", "fed.server_lr=0.5", "fed.server_momentum=0.25"]))
        assert (outer.lr, outer.momentum) == (0.5, 0.25)
        theta = np.zeros(2, np.float32)
        prime(outer, [theta])
        theta = outer.aggregate_train(1, [reply([[2, 0]], 0), reply([[0, 2]], 1)])[0].to_numpy_ndarrays()[0]
        np.testing.assert_allclose(theta, [0.5, 0.5], rtol=1e-6)  # d_1 = -(1, 1)
        prime(outer, [theta])
        theta = outer.aggregate_train(2, [reply([[1.5, 0.5]], 0), reply([[0.5, 1.5]], 1)])[0].to_numpy_ndarrays()[0]
        # d_2 = -(0.5, 0.5), v_2 = 0.25 * -(1, 1) - (0.5, 0.5) = -(0.75, 0.75)
        np.testing.assert_allclose(theta, [0.875, 0.875], rtol=1e-6)


def test_shrink_with_nonpositive_threshold_drops_flagged_updates():
    from strategies.clipping import shrink

    assert shrink(0.5, 0.1) == pytest.approx(0.2) and shrink(0.05, 0.1) == 1.0
    assert shrink(0.5, -0.1) == 0.0 and shrink(-0.2, -0.1) == 1.0
    assert dgc_factor(1.0, 2.0, md=0.5, P=0.0, gc_fac=1.0) == 0.0
