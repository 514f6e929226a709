"""DGC's history gate (fl_mdisc/history.py) against hand maths: nobody flagged on identical honest statistics, a planted
outlier flagged at first sight, a client's score is the mean of its own robust z over its participations, and the
state survives a checkpoint round trip bit for bit."""

import numpy as np
import pytest
import torch

from fl_mdisc.history import HistoryGate


def test_identical_statistics_flag_nobody():
    gate = HistoryGate(pool_rounds=10)
    for rnd in range(1, 6):
        out = gate(rnd, list(range(10)), [0.3] * 10)
        assert not any(flag for flag, _r, _e in out)
        assert all(ratio == 1.0 for _f, ratio, _e in out)


def test_planted_outlier_is_flagged_at_first_sight_and_alone():
    rng = np.random.default_rng(0)
    gate = HistoryGate(pool_rounds=10, kappa=3.5)
    stats = list(0.1 + 0.02 * rng.standard_normal(9)) + [1.0]
    out = gate(1, list(range(10)), stats)
    assert [f for f, _r, _e in out] == [False] * 9 + [True]
    h = out[9][2]["score"]
    assert out[9][1] == pytest.approx(3.5 / h) and out[9][2]["seen"] == 1


def test_robust_z_and_weighted_mean_by_hand():
    gate = HistoryGate(alpha=0.5, pool_rounds=2, kappa=3.5)
    # round 1: median 1, centred (-1, 0, 1) -> sigma = 1.4826 * median(1, 0, 1) = 1.4826
    out1 = gate(1, [0, 1, 2], [0.0, 1.0, 2.0])
    assert [e["z"] for _f, _r, e in out1] == pytest.approx([-1 / 1.4826, 0.0, 1 / 1.4826])
    assert [e["score"] for _f, _r, e in out1] == pytest.approx([-1 / 1.4826, 0.0, 1 / 1.4826])  # first sight: h = z
    # round 2: median 0, centred (0, 0, 10); pooled |c| = (1, 0, 1, 0, 0, 10) -> median 0.5, sigma 0.7413
    out2 = gate(2, [0, 1, 2], [0.0, 0.0, 10.0])
    z2 = 10.0 / (1.4826 * 0.5)
    assert out2[2][2]["z"] == pytest.approx(z2)
    h2 = 0.5 * z2 + 0.5 / 1.4826  # 0.5 z + 0.5 h
    assert out2[2][2]["score"] == pytest.approx(h2) and out2[2][2]["seen"] == 2
    assert out2[2][0] and out2[2][1] == pytest.approx(3.5 / h2) and not out2[0][0]
    # round 3: the window of the scale drops round 1 (R = 2); client 2's score decays by half when it looks ordinary
    out3 = gate(3, [2, 3, 4], [0.0, 0.0, 0.0])
    assert out3[0][2]["score"] == pytest.approx(0.5 * h2) and out3[0][2]["sigma"] == pytest.approx(0.0)


def test_a_client_is_judged_on_its_own_participations():
    # partial participation: client 7 appears in rounds 1 and 5 only; its score holds those two values
    gate = HistoryGate(pool_rounds=10)
    gate(1, [1, 2, 7], [0.0, 0.1, 0.05])
    for rnd in (2, 3, 4):
        gate(rnd, [1, 2, 3], [0.0, 0.1, 0.05])
    out = gate(5, [2, 3, 7], [0.0, 0.1, 0.3])  # median 0.1: client 7 is 0.2 above; pooled |c| median 0.05
    assert out[2][2]["score"] == pytest.approx(0.5 * 0.2 / (1.4826 * 0.05) + 0.5 * 0.0) and out[2][2]["seen"] == 2


def test_state_round_trips_bit_for_bit(tmp_path):
    rng = np.random.default_rng(1)
    a = HistoryGate(pool_rounds=4)
    for rnd in range(1, 8):
        a(rnd, sorted(rng.choice(20, 6, replace=False).tolist()), list(rng.normal(0.1, 0.05, 6)))
    path = tmp_path / "ck.pt"
    torch.save({"gate": a.state()}, path)
    b = HistoryGate(pool_rounds=4)
    b.load_state(torch.load(path, weights_only=False)["gate"])
    pids, stats = [0, 3, 5, 19], [0.1, 0.12, 0.4, 0.09]
    assert a(8, pids, stats) == b(8, pids, stats)
    assert a.state() == b.state()


def test_bad_parameters_are_one_clear_error():
    with pytest.raises(ValueError, match="0 < alpha <= 1"):
        HistoryGate(alpha=0)
