"""Per-actor read-only caches for ClientApps: config, data plan, models, the attacker's trigger."""

from __future__ import annotations

import functools

import torch

from fl_mdisc.burnin import load_model
from fl_mdisc.config import from_json
from fl_mdisc.experiment import make_plan
from fl_mdisc.train import pick_device


@functools.lru_cache(maxsize=4)
def config(cfg_json: str):
    cfg = from_json(cfg_json)
    torch.set_num_threads(int(cfg.client_threads))
    return cfg


@functools.lru_cache(maxsize=4)
def model_from(cfg_json: str, path: str, sha: str):
    """A model loaded from a checkpoint (BN buffers of theta_start live here); parameters are overwritten per call."""
    cfg = config(cfg_json)
    return load_model(cfg, path, sha, device(cfg))


@functools.lru_cache(maxsize=8)
def adversarial_trigger(cfg_json: str, pid: int, start_path: str, start_sha: str) -> torch.Tensor:
    """The attacker's adversarial trigger, crafted once at theta_start (round 1's model) from its own data.

    Crafting depends only on theta_start and the attacker's data, so recomputing it after Ray recycles an actor,
    or after a resume, gives the same tensor.
    """
    from fl_mdisc.attack import craft_trigger
    from fl_mdisc.data import to_float

    cfg = config(cfg_json)
    p = plan(cfg_json)
    dev = device(cfg)
    val_idx, trig_idx, _ = p.attacker[pid]
    model = load_model(cfg, start_path, start_sha, dev)
    xv, yv = to_float(p.ds.x_train[val_idx]).to(dev), torch.as_tensor(p.ds.y_train[val_idx]).to(dev)
    xt, yt = to_float(p.ds.x_train[trig_idx]).to(dev), torch.as_tensor(p.ds.y_train[trig_idx]).to(dev)
    a = cfg.attack
    return craft_trigger(model, xt, yt, xv, yv, a.eps, a.step_size, int(a.steps)).detach()


def device(cfg) -> torch.device:
    return pick_device(cfg)


def plan(cfg_json: str):
    return make_plan(config(cfg_json))


def seed_for(seed: int, rnd: int, pid: int, salt: int = 0) -> int:
    return (seed * 1_000_003 + rnd * 10_007 + pid * 101 + salt) % (2**31 - 1)
