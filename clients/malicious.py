"""Malicious client: the accumulative attack of Pang et al. (NeurIPS 2021) and broken-reply attacks.

* ``accumulative`` (data poisoning, DESIGN.md section 3): at its first call the client crafts the adversarial
  trigger from its own trigger batch (2-step PGD descending the alignment A) and keeps it in
  a per-actor cache (deterministic, so it survives actor recycling and resume); every round it takes its clean stream batch, computes the second-order term
  h = grad_theta A(theta_t) once, crafts the poison batch (2-step PGD ascending J) and trains on it, sending
  the resulting update. In the trigger round it trains on the adversarial trigger batch.
* ``lambda_update`` (the official federated harness): the update is -lam * grad_theta cos(-g_T, g_V) on its
  trigger and validation batches; the trigger round sends one gradient-ascent step on the trigger batch
  scaled by ``trigger_scale`` (the server applies both with its SGD). With ``attack.norm_multiple = k`` (the
  CPU preset's rule) both keep their direction and get norm k x the norm of the honest update the client
  computes on its own clean stream batch (:func:`fl_mdisc.attack.scale_to_norm`), measured
  once at theta_start. With ``attack.stealth_drop = d`` the attacker is stealthy, as
  an accumulative attacker wants to be: it measures the global model's accuracy on its own validation batch, drop
  = (accuracy at theta_start) - (accuracy now), scales its norm by max(0, 1 - drop / d), and while drop >= d sends
  an honest update instead (``attack-paused``): it damages without collapsing training (a constant-norm attacker,
  or an on/off pause, let the server momentum run away on some burn-ins: docs/history.md) and pushes again once the
  model recovers.
* ``adaptive_update`` (ours): the same lambda-update made aware of DGC (:mod:`fl_mdisc.adaptive`, threat model there):
  with ``attack.md_budget = b`` it sends the largest multiple c* in [0, 1] of its update whose estimated DGC statistic
  (on its own clean images, against the burn-in theta_hist every client receives) stays within b x its own honest
  level; ``md_budget: null`` is the plain lambda-update, bit for bit. The trigger round is never held back.
* ``accumulative`` with ``attack.beta > 0``: the seed paper's MD-aware poison (Eq. 21, :mod:`fl_mdisc.attack`), theta*
  = the burn-in historical checkpoint DSC uses.
* ``crash``: the client raises (Flower turns it into an error reply; the round goes on without it).
* ``hang``: from round ``from_round`` on, the client sleeps ``seconds`` before answering honestly: a ClientApp that
  hangs, which must cost the server at most its round timeout and count as a missing reply.
* ``nan`` / ``shape`` / ``scale``: hostile replies (NaN values, a missing array, an honest update times
  ``factor``) that exercise the server's validation and clipping; ``spoof``: an honest update times ``factor`` sent
  under another client's partition id (``claim``), which the server must drop and count.

Its validation and trigger data are its own partition's samples, disjoint from the evaluation test set.
"""

from __future__ import annotations

import functools
import time

import numpy as np
import torch

from fl_mdisc.attack import (craft_poison, grads_norm, lambda_update_grad, reversed_trigger_grad, scale_to_norm,
                             second_order_term)
from fl_mdisc.burnin import load_model
from fl_mdisc.config import LAMBDA_ATTACKS, OMNISCIENT_ATTACKS
from fl_mdisc.data import stream_batch, to_float
from fl_mdisc.models import set_params
from fl_mdisc.sampling import stream_step
from fl_mdisc.train import local_sgd

from . import runtime
from .honest import batch_tensors, md_aware, np_list, train_honest


def train_malicious(cfg_json: str, params: list, conf, pid: int) -> tuple[list, dict]:
    t0 = time.time()
    cfg = runtime.config(cfg_json)
    a = cfg.attack
    if a.name == "crash":
        raise RuntimeError(f"simulated client failure in partition {pid} (attack=crash)")
    if a.name == "hang":
        if int(conf["server-round"]) >= int(a.from_round):
            time.sleep(float(a.seconds))
        return train_honest(cfg_json, params, conf, pid)
    if a.name in OMNISCIENT_ATTACKS or a.name in HOSTILE_REPLIES:
        return _honest_then_altered(cfg_json, params, conf, pid, a)
    plan = runtime.plan(cfg_json)
    torch.set_num_threads(int(cfg.attacker_threads))
    rnd, phase = int(conf["server-round"]), str(conf["phase"])
    model = runtime.model_from(cfg_json, str(conf["start-path"]), str(conf["start-sha"]))
    set_params(model, params)
    torch.manual_seed(runtime.seed_for(cfg.seed, rnd, pid, 2))
    dev = runtime.device(cfg)
    val_idx, trig_idx, stream_idx = plan.attacker[pid]
    xv, yv = to_float(plan.ds.x_train[val_idx]).to(dev), torch.as_tensor(plan.ds.y_train[val_idx]).to(dev)
    xt, yt = to_float(plan.ds.x_train[trig_idx]).to(dev), torch.as_tensor(plan.ds.y_train[trig_idx]).to(dev)
    loss = 0.0
    extra = {}
    if a.name in LAMBDA_ATTACKS:
        batches = (xv, yv, xt, yt, stream_idx)
        extra = _lambda_step(cfg_json, cfg, plan, model, batches, conf, pid, params)
        if extra.get("attack-paused"):  # stealth: an honest update was sent instead (see _lambda_step)
            new, met = extra.pop("honest")
            met.update({**extra, "seconds": time.time() - t0})
            return new, met
    else:  # accumulative data poisoning
        loss = _poison_step(cfg_json, cfg, plan, model, (xv, yv, xt, yt, stream_idx), conf, pid)
    metrics = {"num-examples": int(cfg.fed.batch_size), "train-loss": loss, "md-client": 0.0, "dsc-corrected": 0,
               "dsc-steps": 0, "poisoned": 1, "seconds": time.time() - t0, **extra}
    return np_list(model), metrics


HOSTILE_REPLIES = ("nan", "shape", "scale", "spoof")


def _honest_then_altered(cfg_json, params, conf, pid, a) -> tuple[list, dict]:
    """The omniscient attackers (their reply is replaced server-side, strategies/omniscient.py) and the hostile
    replies: an honest update, then broken (nan, shape), scaled (scale, spoof) or sent under another id (spoof)."""
    new, metrics = train_honest(cfg_json, params, conf, pid)
    if a.name == "nan":
        new[0] = np.full_like(new[0], np.nan)
    elif a.name == "shape":
        new = new[:-1]
    elif a.name in ("scale", "spoof"):
        new = [p + float(a.factor) * (n - p) for p, n in zip(params, new)]
    if a.name == "spoof":
        metrics["partition-id"] = int(a.claim)  # lies about who it is (the server binds replies to senders)
    metrics["poisoned"] = 1
    return new, metrics


def _lambda_step(cfg_json, cfg, plan, model, batches, conf, pid, params) -> dict:
    """The lambda-update (Pang et al.) in place on ``model``, scaled to the strength rule; returns what it logs.
    Under the stealth budget a paused attacker returns ``attack-paused`` and its honest reply under ``honest``."""
    a = cfg.attack
    xv, yv, xt, yt, _stream_idx = batches
    phase = str(conf["phase"])
    k = a.get("norm_multiple")
    budget, scale = a.get("stealth_drop"), 1.0
    extra = {}
    if phase != "trigger" and budget is not None:
        vpid = min(plan.malicious)  # colluders share the validation batch: one baseline for all of them
        drop = start_val_accuracy(cfg_json, vpid, str(conf["start-path"]), str(conf["start-sha"])) \
            - val_accuracy(model, xv, yv)
        scale = min(1.0, max(0.0, 1.0 - drop / float(budget)))  # proportional: full strength at no damage
        extra["attack-val-drop"] = drop
        if scale == 0.0:  # stealth: pause (send an honest update) until the model recovers
            return {"poisoned": 1, "attack-paused": 1, "attack-val-drop": drop,
                    "honest": train_honest(cfg_json, params, conf, pid)}
    if phase == "trigger":
        g = reversed_trigger_grad(model, xt, yt, float(a.trigger_scale))
    else:
        g = lambda_update_grad(model, xt, yt, xv, yv, float(a.lam))
    if k is not None:  # k x the honest norm at theta_start, measured once (no feedback)
        ref = start_reference_norm(cfg_json, pid, str(conf["start-path"]), str(conf["start-sha"]))
        g = scale_to_norm(g, float(k) * ref * scale)
        extra["attack-ref-norm"] = ref
    if a.name == "adaptive_update" and phase != "trigger" and a.get("md_budget") is not None:
        g, info = _within_md_budget(cfg_json, cfg, model, g, pid, conf)
        extra.update(info)
    extra["attack-norm"] = grads_norm(g)
    with torch.no_grad():
        for p, gi in zip([p for p in model.parameters() if p.requires_grad], g):
            p.sub_(gi)
    return extra


def _poison_step(cfg_json, cfg, plan, model, batches, conf, pid) -> float:
    """Accumulative data poisoning (Pang et al.): local SGD on a crafted poisoned batch (the trigger batch in the
    trigger round), in place on ``model``; returns the training loss."""
    a = cfg.attack
    xv, yv, _xt, yt, stream_idx = batches
    rnd, phase = int(conf["server-round"]), str(conf["phase"])
    x_trig = runtime.adversarial_trigger(cfg_json, pid, str(conf["start-path"]), str(conf["start-sha"]))
    if phase == "trigger":
        x_train, y_train = x_trig, yt
    else:
        idx = stream_batch(stream_idx, int(cfg.fed.batch_size), int(cfg.seed), pid, stream_step(cfg, rnd, pid))
        x, y = batch_tensors(cfg, plan, idx, rnd, pid)
        h = second_order_term(model, x_trig, yt, xv, yv)
        x_train, y_train = craft_poison(model, x, y, h, a.eps, a.step_size, int(a.steps), float(a.gamma),
                                        **md_aware(cfg_json, a, conf)), y
    return local_sgd(model, x_train, y_train, float(cfg.fed.client_lr), int(cfg.fed.local_steps))


def _within_md_budget(cfg_json, cfg, model, g, pid: int, conf) -> tuple[list, dict]:
    """The DGC-aware attacker's last step (fl_mdisc/adaptive.py): the update is Delta = -g (client lr 1, raw
    gradient); send c* Delta, the largest multiple whose estimated DGC statistic stays within the budget."""
    from fl_mdisc.adaptive import budget_at, estimated_statistic, largest_scale_within, probe_md

    a = cfg.attack
    start, hist = (str(conf["start-path"]), str(conf["start-sha"])), (str(conf["hist-path"]), str(conf["hist-sha"]))
    probe_x, hist_logits = adaptive_probe(cfg_json, pid, *hist)
    fit = adaptive_calibration(cfg_json, pid, *start, *hist)
    budget, ref = budget_at(fit, float(a.md_budget), int(conf["server-round"]))
    C = float(fit["clip_norm"])
    params = [p for p in model.parameters() if p.requires_grad]
    theta = [p.detach().clone() for p in params]
    delta = [-gi for gi in g]
    base = probe_md(model, theta, probe_x, hist_logits)
    eta = float(cfg.fed.server_lr)
    c, s = largest_scale_within(lambda c: estimated_statistic(model, theta, [c * d for d in delta], eta, C, probe_x,
                                                              hist_logits, base), budget, int(a.search_steps))
    return [c * gi for gi in g], {"attack-md-est": s, "attack-md-budget": budget, "attack-md-ref": ref, "attack-scale": c}


@torch.no_grad()
def val_accuracy(model, x, y) -> float:
    """Accuracy (%) of the current global model on the attacker's own validation batch (eval mode)."""
    was = model.training
    model.eval()
    acc = float((model(x).argmax(1) == y).float().mean()) * 100.0
    model.train(was)
    return acc


def honest_update(cfg, plan, model, stream_idx, step: int, rnd: int, pid: int) -> list[torch.Tensor]:
    """Delta = theta' - theta of the update an honest client would send from batch ``step`` of the attacker's own
    clean stream (same batch size, augmentation of round ``rnd``, client lr and local steps); the model (parameters and
    BatchNorm statistics) is left unchanged."""
    idx = stream_batch(stream_idx, int(cfg.fed.batch_size), int(cfg.seed), pid, step)
    x, y = batch_tensors(cfg, plan, idx, rnd, pid)
    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    buffers = [b.detach().clone() for b in model.buffers()]  # BatchNorm statistics stay as they were
    local_sgd(model, x, y, float(cfg.fed.client_lr), int(cfg.fed.local_steps))
    with torch.no_grad():
        delta = [p - b for p, b in zip(params, before)]
        for p, b in zip(params, before):
            p.copy_(b)
        for b, saved in zip(model.buffers(), buffers):
            b.copy_(saved)
    return delta


def honest_reference_norm(cfg, plan, model, stream_idx, rnd: int, pid: int) -> float:
    """||Delta|| of the update an honest client would send this round from the attacker's own clean stream batch."""
    step = stream_step(cfg, rnd, pid) if rnd > 1 else 0
    return grads_norm(honest_update(cfg, plan, model, stream_idx, step, rnd, pid))


# The attacker's measurements, cached per process (deterministic: each is a pure function of its arguments)

@functools.lru_cache(maxsize=8)
def start_reference_norm(cfg_json: str, pid: int, start_path: str, start_sha: str) -> float:
    """The norm of the honest update the attacker would send at theta_start from its round-1 clean batch (the
    attacker's reference); deterministic, so recomputing it after an actor restart gives the same."""

    cfg = runtime.config(cfg_json)
    p = runtime.plan(cfg_json)
    model = load_model(cfg, start_path, start_sha, runtime.device(cfg))
    return honest_reference_norm(cfg, p, model, p.attacker[pid][2], 1, pid)



@functools.lru_cache(maxsize=8)
def start_val_accuracy(cfg_json: str, pid: int, start_path: str, start_sha: str) -> float:
    """The attacker's validation accuracy at theta_start (the baseline of ``attack.stealth_drop``)."""
    from fl_mdisc.data import to_float

    cfg = runtime.config(cfg_json)
    p = runtime.plan(cfg_json)
    dev = runtime.device(cfg)
    val_idx = p.attacker[pid][0]
    model = load_model(cfg, start_path, start_sha, dev)
    return val_accuracy(model, to_float(p.ds.x_train[val_idx]).to(dev), torch.as_tensor(p.ds.y_train[val_idx]).to(dev))


@functools.lru_cache(maxsize=8)
def adaptive_probe(cfg_json: str, pid: int, hist_path: str, hist_sha: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The DGC-aware attacker's stand-in probe (the first ``attack.probe_size`` images of its validation batch) and
    theta_hist's logits on it (fl_mdisc/adaptive.py)."""
    from fl_mdisc.data import to_float

    cfg = runtime.config(cfg_json)
    p = runtime.plan(cfg_json)
    dev = runtime.device(cfg)
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

    cfg = runtime.config(cfg_json)
    entry = {"dir": str(Path(start_path).parent), "start": start_path, "start_sha": start_sha,
             "hist": hist_path, "hist_sha": hist_sha}
    return attacker_calibration(cfg, entry, pid, *attacker_images(cfg, runtime.plan(cfg_json), pid), log=lambda m: None,
                                device=str(runtime.device(cfg)))
