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


@functools.lru_cache(maxsize=8)
def start_reference_norm(cfg_json: str, pid: int, start_path: str, start_sha: str) -> float:
    """The norm of the honest update the attacker would send at theta_start from its round-1 clean batch (the
    reference of ``attack.norm_ref=start``); deterministic, so recomputing it after an actor restart gives the same."""
    from clients.malicious import honest_reference_norm

    cfg = config(cfg_json)
    p = plan(cfg_json)
    model = load_model(cfg, start_path, start_sha, device(cfg))
    return honest_reference_norm(cfg, p, model, p.attacker[pid][2], 1, pid)


@functools.lru_cache(maxsize=8)
def start_lambda(cfg_json: str, pid: int, start_path: str, start_sha: str) -> float:
    """lambda such that the lambda-update at theta_start has norm k x the honest norm there (``norm_ref=lambda``)."""
    from fl_mdisc.attack import grads_norm, lambda_update_grad
    from fl_mdisc.data import to_float

    cfg = config(cfg_json)
    p = plan(cfg_json)
    dev = device(cfg)
    model = load_model(cfg, start_path, start_sha, dev)
    val_idx, trig_idx, _ = p.attacker[pid]
    xv, yv = to_float(p.ds.x_train[val_idx]).to(dev), torch.as_tensor(p.ds.y_train[val_idx]).to(dev)
    xt, yt = to_float(p.ds.x_train[trig_idx]).to(dev), torch.as_tensor(p.ds.y_train[trig_idx]).to(dev)
    unit = grads_norm(lambda_update_grad(model, xt, yt, xv, yv, 1.0))
    ref = start_reference_norm(cfg_json, pid, start_path, start_sha)
    return float(cfg.attack.norm_multiple) * ref / unit if unit > 0 else 0.0


@functools.lru_cache(maxsize=8)
def start_val_accuracy(cfg_json: str, pid: int, start_path: str, start_sha: str) -> float:
    """The attacker's validation accuracy at theta_start (the baseline of ``attack.stealth_drop``)."""
    from clients.malicious import val_accuracy
    from fl_mdisc.data import to_float

    cfg = config(cfg_json)
    p = plan(cfg_json)
    dev = device(cfg)
    val_idx = p.attacker[pid][0]
    model = load_model(cfg, start_path, start_sha, dev)
    return val_accuracy(model, to_float(p.ds.x_train[val_idx]).to(dev), torch.as_tensor(p.ds.y_train[val_idx]).to(dev))


@functools.lru_cache(maxsize=8)
def adaptive_probe(cfg_json: str, pid: int, hist_path: str, hist_sha: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The DGC-aware attacker's stand-in probe (the first ``attack.probe_size`` images of its validation batch) and
    theta_hist's logits on it (fl_mdisc/adaptive.py)."""
    from fl_mdisc.data import to_float

    cfg = config(cfg_json)
    p = plan(cfg_json)
    dev = device(cfg)
    x = to_float(p.ds.x_train[p.attacker[pid][0][: int(cfg.attack.probe_size)]]).to(dev)
    hist = load_model(cfg, hist_path, hist_sha, dev).eval()
    with torch.no_grad():
        return x, hist(x)


@functools.lru_cache(maxsize=8)
def adaptive_calibration(cfg_json: str, pid: int, start_path: str, start_sha: str, hist_path: str, hist_sha: str) -> dict:
    """The DGC-aware attacker's estimate of the server's calibration (C_hat, P_hat_t = mu + tau t): DGC's public rule
    run on its own clean stream images with its own probe (:func:`fl_mdisc.adaptive.attacker_calibration`; cached
    beside the burn-in, normally prepared by the launcher before the run: :func:`prepare_attackers`)."""
    from pathlib import Path

    from fl_mdisc.adaptive import attacker_calibration, attacker_images

    cfg = config(cfg_json)
    entry = {"dir": str(Path(start_path).parent), "start": start_path, "start_sha": start_sha,
             "hist": hist_path, "hist_sha": hist_sha}
    return attacker_calibration(cfg, entry, pid, *attacker_images(cfg, plan(cfg_json), pid), log=lambda m: None,
                                device=str(device(cfg)))


def device(cfg) -> torch.device:
    return pick_device(cfg)


def plan(cfg_json: str):
    return make_plan(config(cfg_json))


def seed_for(seed: int, rnd: int, pid: int, salt: int = 0) -> int:
    return (seed * 1_000_003 + rnd * 10_007 + pid * 101 + salt) % (2**31 - 1)
