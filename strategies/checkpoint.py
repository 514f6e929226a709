"""The server's checkpoint: what a run needs to go on bit-identically after a stop.

A checkpoint holds the round it was written after, the global model, the server optimiser's momentum buffer
(:class:`strategies.server_opt.ServerSGD`), the defence's memory (``state()`` of GC/DGC/FLDetector: the history
gate's per-client scores, FLDetector's L-BFGS memory, DGC's lagged models), the aggregator's own state (e.g. ByzFL
centered clipping's centre), the monitor's state and the config it belongs to (minus the keys that may change
between a stop and its resume: ``resume``, ``out_dir``, ``stop_after``). Clients keep nothing between rounds
(their streams are drawn from (seed, round)), so this is the whole state of a run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from flwr.app import ArrayRecord
from omegaconf import OmegaConf

from fl_mdisc.config import to_json
from fl_mdisc.errors import ConfigError

RESUMABLE_KEYS = ("resume", "out_dir", "stop_after")  # thread counts stay: they change float rounding


def config_key(cfg) -> str:
    """The config a checkpoint belongs to, as JSON, without :data:`RESUMABLE_KEYS`."""
    c = OmegaConf.to_container(cfg, resolve=True)
    for k in RESUMABLE_KEYS:
        c.pop(k, None)
    return to_json(c)


@dataclass
class Resumed:
    """Where a run goes on: the next round, the model, and what the round loop tracks."""

    arrays: ArrayRecord
    next_round: int = 1
    monitor_round: int | None = None
    done: bool = False

    @property
    def last_round(self) -> int | None:
        """The round the files were written up to (None: a fresh run)."""
        return self.next_round - 1 if self.next_round > 1 else None


def save(path: Path, rnd: int, arrays: ArrayRecord, strategy, clip, cfg, monitor_round=None, done=False) -> None:
    """Write the state after round ``rnd`` (``strategy``: the outer :class:`ServerSGD` chain; ``clip``: the defence
    wrapper or None). Written to a temporary file and renamed into place, so a ServerApp killed while writing (its
    federation stopped because the SuperLink died) leaves the previous checkpoint whole."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"round": rnd, "arrays": arrays.to_numpy_ndarrays(), "momentum": strategy.momentum_vector,
                "defence_state": getattr(clip, "state", lambda: None)(),
                "aggregator_state": getattr(strategy.sampler.strategy, "state", lambda: None)(),
                "monitor_round": monitor_round, "done": done, "cfg_json": config_key(cfg)}, tmp)
    os.replace(tmp, path)


def restore(path: Path, strategy, clip, cfg, fresh: ArrayRecord) -> Resumed:
    """Load ``path`` into the strategy chain when it exists, else a fresh start at round 1 from ``fresh``.

    One :class:`ConfigError` naming the fix when the checkpoint belongs to another config or cannot be read."""
    if not path.exists():
        return Resumed(fresh)
    try:
        ck = torch.load(path, map_location="cpu", weights_only=False)
        if ck.get("cfg_json") != config_key(cfg):
            raise ConfigError(f"{path} belongs to a different config; use another out_dir or resume=false")
        strategy.momentum_vector = ck["momentum"]
        if clip is not None and ck.get("defence_state") is not None:
            clip.load_state(ck["defence_state"])
        if ck.get("aggregator_state") is not None:
            strategy.sampler.strategy.load_state(ck["aggregator_state"])
        return Resumed(ArrayRecord(ck["arrays"]), ck["round"] + 1, ck.get("monitor_round"), bool(ck.get("done")))
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint is one clear error
        raise ConfigError(f"cannot resume from {path} ({exc}); delete it or use resume=false") from None
