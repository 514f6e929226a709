"""No defence reads the simulated truth: the aggregation rules, the flagging and the calibration run with
``fed.num_malicious`` and the malicious set made unreadable (any read raises), and their modules name neither. Only the
scoring, the logs and the simulated attackers may (fl_mdisc/assumption.py)."""

import ast
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from fl_mdisc.burnin import ensure_burnin
from fl_mdisc.calibration import apply_calibration
from strategies.factory import build_strategy

from .conftest import tiny_cfg
from .flwr_helpers import prime, reply

REPO = Path(__file__).resolve().parents[1]
# the modules that decide anything about an update: aggregation, clipping, flagging, calibration, assumption
DEFENCE_MODULES = ["fl_mdisc/calibration.py", "fl_mdisc/history.py", "fl_mdisc/gate.py", "fl_mdisc/fldetector.py",
                   "fl_mdisc/assumption.py", "strategies/base.py", "strategies/gc.py", "strategies/dgc.py",
                   "strategies/clipping.py", "strategies/fldetector.py", "strategies/byzfl.py",
                   "strategies/validate.py", "strategies/server_opt.py"]


class TruthRead(AssertionError):
    pass


class Unreadable(frozenset):
    """The malicious set, as a defence must never see it: any use raises."""

    def _no(self, *a, **k):
        raise TruthRead("a defence read the malicious set")

    __contains__ = __iter__ = __len__ = __bool__ = _no


def _raise():
    raise TruthRead("a defence read fed.num_malicious")


def hide_truth(cfg):
    OmegaConf.register_new_resolver("truth_read", _raise, replace=True)
    cfg.fed.num_malicious = "${truth_read:}"
    with pytest.raises(Exception, match="a defence read fed.num_malicious"):  # the trap works
        _ = cfg.fed.get("num_malicious")
    return cfg


STRATEGIES = [["strategy=gc"], ["strategy=dgc"], ["strategy=dgc_paper", "strategy.calib_rounds=10"],
              ["strategy=multikrum"], ["strategy=fldetector", "strategy.warmup=0", "strategy.window=1"],
              ["strategy=byzfl", "strategy.aggregator=geomed", "strategy.pre=[nnm]"],
              ["strategy=byzfl", "strategy.aggregator=cc"], ["strategy=median"], ["strategy=trimmed_mean"]]


@pytest.mark.parametrize("told", [[], ["assume.f=1"]], ids=["nothing-assumed", "assume-f"])
@pytest.mark.parametrize("strategy", STRATEGIES, ids=lambda s: "-".join(x.split("=")[1] for x in s[:2]))
def test_defences_run_without_the_truth(tiny, strategy, told):
    cfg = tiny_cfg(tiny, *strategy, *told, "fed.num_clients=5", "attack=lambda_update")
    entry = ensure_burnin(cfg, log=lambda m: None)
    hide_truth(cfg)
    apply_calibration(cfg, entry, log=lambda m: None)  # C (and the paper gate's P_t) from the server's own data
    outer, clip, validator = build_strategy(cfg, probe_md=lambda cands: [float(np.sum(c[0])) for c in cands],
                                            malicious=Unreadable({4}))
    shapes = [np.zeros((3, 2), np.float32), np.zeros(2, np.float32)]
    for rnd in range(1, 4):
        prime(outer, shapes)
        ups = [reply([np.full((3, 2), 0.01 * (i + rnd), np.float32), np.full(2, 0.02, np.float32)], i) for i in range(4)]
        ups.append(reply([np.full((3, 2), 5.0, np.float32), np.full(2, -5.0, np.float32)], 4))  # an odd one out
        arrays, _ = outer.aggregate_train(rnd, ups)
        assert arrays is not None and all(np.isfinite(a).all() for a in arrays.to_numpy_ndarrays())


def test_defence_modules_name_neither_the_count_nor_the_set():
    found = []
    for rel in DEFENCE_MODULES:
        tree = ast.parse((REPO / rel).read_text())
        for node in ast.walk(tree):
            name = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else \
                node.arg if isinstance(node, ast.arg) else None
            if name and "malicious" in name:
                found.append(f"{rel}:{node.lineno} {name}")
    assert found == []
