"""The server checkpoint without Ray: a run stopped after round 2 and resumed from its checkpoint gives the same
model, server momentum and defence memory as the run that never stopped (strategies/checkpoint.py)."""

import numpy as np
import pytest

from fl_mdisc.config import compose
from fl_mdisc.errors import ConfigError
from strategies import checkpoint
from strategies.factory import build_strategy

from .flwr_helpers import prime, reply

OVERRIDES = ["strategy=dgc", "strategy.clip_norm=3.0", "fed.num_clients=5", "fed.server_lr=0.5",
             "fed.server_momentum=0.7"]


def probe(cands):  # "MD" of a candidate model: its first coordinate
    return [float(c[0][0]) for c in cands]


def play(outer, theta, rounds):
    """Rounds of hand-made replies that depend on the model they answer: client 4 pushes hard on coordinate 0."""
    for rnd in rounds:
        prime(outer, theta)
        ups = [[t + np.float32(0.01 * (k + 1) * rnd + (1.5 if k == 4 else 0.0)) for t in theta] for k in range(5)]
        theta = outer.aggregate_train(rnd, [reply(u, k) for k, u in enumerate(ups)])[0].to_numpy_ndarrays()
    return theta


def test_resume_is_bit_identical(tmp_path):
    from flwr.app import ArrayRecord

    cfg = compose(OVERRIDES)
    theta0 = [np.zeros(3, np.float32), np.ones(2, np.float32)]
    outer, clip, _ = build_strategy(cfg, probe_md=probe)
    straight = play(outer, theta0, range(1, 5))
    assert any(e["flagged"] for e in clip.client_log)  # the gate's memory matters to what follows

    first, clip1, _ = build_strategy(cfg, probe_md=probe)
    mid = play(first, theta0, range(1, 3))
    path = tmp_path / "checkpoint.pt"
    checkpoint.save(path, 2, ArrayRecord(mid), first, clip1, cfg)
    second, clip2, _ = build_strategy(cfg, probe_md=probe)
    state = checkpoint.restore(path, second, clip2, cfg, ArrayRecord(theta0))
    assert (state.next_round, state.last_round, state.done) == (3, 2, False)
    resumed = play(second, state.arrays.to_numpy_ndarrays(), range(3, 5))
    for a, b in zip(straight, resumed):
        assert np.array_equal(a, b)
    for a, b in zip(outer.momentum_vector, second.momentum_vector):
        assert np.array_equal(a, b)
    assert repr(clip.state()) == repr(clip2.state())


def test_a_fresh_start_and_a_foreign_checkpoint(tmp_path):
    from flwr.app import ArrayRecord

    cfg = compose(OVERRIDES)
    outer, clip, _ = build_strategy(cfg, probe_md=probe)
    theta0 = ArrayRecord([np.zeros(3, np.float32)])
    assert checkpoint.restore(tmp_path / "none.pt", outer, clip, cfg, theta0).last_round is None
    checkpoint.save(tmp_path / "c.pt", 1, theta0, outer, clip, cfg)
    other = compose(OVERRIDES + ["fed.server_momentum=0.5"])
    with pytest.raises(ConfigError, match="belongs to a different config"):
        checkpoint.restore(tmp_path / "c.pt", outer, clip, other, theta0)
    # the keys a resume may change do not make it foreign
    assert checkpoint.config_key(compose(OVERRIDES + ["stop_after=1", "resume=false"])) == checkpoint.config_key(cfg)
