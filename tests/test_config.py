import subprocess
import sys

import pytest

from fl_mdisc.config import compose
from fl_mdisc.errors import ConfigError


@pytest.mark.parametrize("overrides,message", [
    (["strategy=nope"], "unknown strategy 'nope'"),
    (["attack=nope"], "unknown attack 'nope'"),
    (["dataset=imagenet"], "unknown dataset 'imagenet'"),
    (["fed.num_malicious=6"], "exceeds fed.num_clients=5"),
    (["defense=dsc", "defense.eps=1.5"], "defense.eps=1.5 is out of range"),
    (["defense=dsc", "defense.mu=-1"], "defense.mu=-1 is out of range"),
    (["strategy=dgc", "strategy.tau=-0.1", "strategy.mu=0.1"], "strategy.tau=-0.1 is out of range"),
    (["strategy=dgc", "strategy.mu=0.1"], "set both strategy.mu and strategy.tau"),
    (["strategy=dgc", "strategy.gate=foo"], "unknown strategy.gate 'foo'"),
    (["strategy=dgc", "strategy.target_fpr=0.9"], "strategy.target_fpr=0.9 is out of range"),
    (["split.calib=39600"], "split.calib must be smaller than split.burnin"),
    (["attack=accumulative", "attack.eps=0"], "attack.eps=0 is out of range"),
    (["strategy=gc", "strategy.clip_norm=0"], "strategy.clip_norm=0 is out of range"),
    (["num_rounds=0"], "num_rounds=0 is out of range"),
    (["seed=abc"], "seed must be a number"),
    (["attack=lambda_update", "fed.num_malicious=0"], "needs fed.num_malicious >= 1"),
    (["no_such_key=1"], "invalid override"),
    (["burnin.hist_epoch=99"], "burnin.hist_epoch=99 is out of range"),
])
def test_invalid_config_is_one_clear_error(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        compose(overrides)


def test_presets_hold_rules_not_fitted_constants():
    cpu = compose([])
    assert cpu.preset_name == "cpu" and cpu.model.name == "small_cnn"
    # C and the DGC threshold are computed where the run happens (calibration.py), not read from the preset
    assert cpu.strategy.clip_norm is None and cpu.strategy.mu is None and cpu.strategy.tau is None
    assert compose(["protocol=harness", "strategy=dgc_paper"]).strategy.clip_norm is None
    assert cpu.attack.norm_multiple == cpu.calib.norm_multiple == 2.0  # a strength rule, not a fitted lambda
    assert compose(["protocol=harness", "strategy=dgc_paper"]).attack.norm_multiple is None  # Pang's harness keeps lambda = 0.08
    assert compose(["protocol=harness", "strategy=dgc_paper"]).attack.lam == 0.08 and compose(["protocol=harness", "strategy=dgc_paper"]).attack.trigger_scale == 0.01
    # explicit values override the rules unchanged
    ex = compose(["strategy.clip_norm=1.5", "strategy.mu=0.3", "strategy.tau=0.001"])
    assert (ex.strategy.clip_norm, ex.strategy.mu, ex.strategy.tau) == (1.5, 0.3, 0.001)
    # the burn-in seed follows the run seed unless set
    assert compose(["seed=2"]).burnin.seed == 2 and compose(["seed=2", "burnin.seed=0"]).burnin.seed == 0
    paper = compose(["preset=paper"])
    assert paper.model.name == "resnet18" and paper.num_rounds == 500 and paper.burnin.hist_epoch == 20
    assert compose(["preset=paper", "model=small_cnn"]).model.name == "small_cnn"  # the command line wins


def test_harness_protocol_has_one_participant():
    c = compose(["protocol=harness", "strategy=dgc_paper"])
    assert c.fed.num_clients == 1 and c.fed.num_malicious == 1
    c = compose(["protocol=harness", "attack=none", "strategy=dgc_paper"])
    assert c.fed.num_malicious == 0


def test_cli_exits_nonzero_with_one_line():
    p = subprocess.run([sys.executable, "-m", "app.cli", "run", "strategy=bogus"], capture_output=True, text=True)
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and "unknown strategy 'bogus'" in p.stderr
    assert "Traceback" not in p.stderr


def test_cli_missing_data(tmp_path):
    p = subprocess.run([sys.executable, "-m", "app.cli", "run", f"data_root={tmp_path}", f"out_dir={tmp_path}/o"],
                       capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                                                            "FL_MDISC_OFFLINE": "1"})
    assert p.returncode == 2 and "cifar10 not found under" in p.stderr and "Traceback" not in p.stderr


def test_gpu_share_per_client(monkeypatch):
    import torch

    from app.runner import gpus_per_client

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert gpus_per_client(compose(["preset=paper"])) == pytest.approx(0.25)  # 5 clients, at most 4 per GPU
    assert gpus_per_client(compose(["preset=paper", "device=cpu"])) == 0.0
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpus_per_client(compose(["preset=paper"])) == 0.0
