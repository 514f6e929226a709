"""Burn-in cache integrity, unreadable checkpoints, error replies."""

import time

import numpy as np
import pytest
from flwr.app import Error, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.app.metadata import Metadata

from fl_mdisc.burnin import ensure_burnin, load_state
from fl_mdisc.config import compose, resolve_paths
from fl_mdisc.errors import CheckpointError, ConfigError
from strategies import server_app
from strategies.validate import check_reply

from .conftest import tiny_overrides


def _cfg(data, tmp, *extra):
    cfg = compose(tiny_overrides(data, tmp / "cache", tmp / "out", *extra))
    resolve_paths(cfg)
    return cfg


def test_corrupted_burnin_cache_is_detected_and_rebuilt(tiny_data_root, tmp_path):
    cfg = _cfg(tiny_data_root, tmp_path)
    entry = ensure_burnin(cfg, log=lambda m: None)
    with open(entry["hist"], "r+b") as f:  # flip bytes in the middle of the checkpoint
        f.seek(200)
        f.write(b"\x00\xff" * 16)
    with pytest.raises(CheckpointError, match="checksum"):
        load_state(entry["hist"], entry["hist_sha"])
    said = []
    again = ensure_burnin(cfg, log=said.append)
    assert any("corrupted" in s for s in said)
    assert load_state(again["hist"], again["hist_sha"])  # rebuilt and valid
    assert again["hist_sha"] == entry["hist_sha"]  # the burn-in is seeded: same bytes again


def test_unreadable_checkpoint_is_one_clear_error(tiny_data_root, tmp_path):
    cfg = _cfg(tiny_data_root, tmp_path, "strategy=st", "attack=none")
    out = tmp_path / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "checkpoint.pt").write_bytes(b"not a checkpoint")
    from omegaconf import OmegaConf

    (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    with pytest.raises(ConfigError, match="cannot resume from .*checkpoint.pt"):
        server_app.run(grid=None, run_config={"config-file": str(out / "config.yaml")})


def test_error_reply_is_dropped_with_reason():
    md = Metadata(run_id=1, message_id="m", src_node_id=0, dst_node_id=3, reply_to_message_id="", group_id="",
                  created_at=time.time(), ttl=3600, message_type=MessageType.TRAIN)
    err = Message(Error(code=0, reason="boom"), reply_to=Message(RecordDict(), metadata=md))
    assert "client error: boom" in check_reply(err, [np.zeros(2, np.float32)], 10**6)
