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
    (["strategy=dgc", "strategy.mu=-0.1"], "strategy.mu=-0.1 is out of range"),
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


def test_presets_and_calibrated_defaults():
    cpu = compose([])
    assert cpu.preset_name == "cpu" and cpu.model.name == "small_cnn"
    assert cpu.strategy.clip_norm == cpu.calib.clip_norm and cpu.attack.lam == cpu.calib.lam
    assert cpu.attack.trigger_scale == cpu.calib.trigger_scale  # the preset's calibrated trigger ...
    assert compose(["protocol=harness"]).attack.trigger_scale == 0.01  # ... and Pang's for the harness
    paper = compose(["preset=paper"])
    assert paper.model.name == "resnet18" and paper.num_rounds == 500 and paper.burnin.hist_epoch == 20
    assert compose(["preset=paper", "model=small_cnn"]).model.name == "small_cnn"  # the command line wins


def test_harness_protocol_has_one_participant():
    c = compose(["protocol=harness"])
    assert c.fed.num_clients == 1 and c.fed.num_malicious == 1
    c = compose(["protocol=harness", "attack=none"])
    assert c.fed.num_malicious == 0


def test_cli_exits_nonzero_with_one_line():
    p = subprocess.run([sys.executable, "-m", "fl_mdisc.cli", "run", "strategy=bogus"], capture_output=True, text=True)
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and "unknown strategy 'bogus'" in p.stderr
    assert "Traceback" not in p.stderr


def test_cli_missing_data(tmp_path):
    p = subprocess.run([sys.executable, "-m", "fl_mdisc.cli", "run", f"data_root={tmp_path}", f"out_dir={tmp_path}/o"],
                       capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                                                            "FL_MDISC_OFFLINE": "1"})
    assert p.returncode == 2 and "cifar10 not found under" in p.stderr and "Traceback" not in p.stderr


def test_gpu_share_per_client(monkeypatch):
    import torch

    from fl_mdisc.cli import gpus_per_client

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert gpus_per_client(compose(["preset=paper"])) == pytest.approx(0.25)  # 5 clients, at most 4 per GPU
    assert gpus_per_client(compose(["preset=paper", "device=cpu"])) == 0.0
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpus_per_client(compose(["preset=paper"])) == 0.0
