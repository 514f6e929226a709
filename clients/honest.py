"""Honest streaming client: one fresh stream batch per round, optional DSC/AT correction, local SGD.

Per participation j (0-based: with K of N clients per round, j counts the earlier rounds that sampled this client,
:func:`fl_mdisc.sampling.stream_step`; with every client every round, j = r - 1) the client takes batch j of its
partition's stream (order from (seed, partition id,
pass), see :func:`fl_mdisc.data.stream_batch`), applies crop+flip from a generator seeded by (seed, round,
partition), optionally has it replaced by a poisoned batch (``attack=stream_poison`` victims: placement (b)),
then corrects it with DSC (threshold P = mu + tau * m, m = r - 1 batches since the phase began) or AT, and
takes ``local_steps`` SGD steps at ``client_lr`` on it (FedAvg's local training on the batch that arrived;
:func:`fl_mdisc.train.local_sgd`). Under DSC it reports the mean MD of its incoming samples against theta_hist.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from fl_mdisc.attack import craft_poison, second_order_term
from fl_mdisc.correction import at_correct, dsc_correct
from fl_mdisc.data import augment, stream_batch, to_float
from fl_mdisc.md import md_from_logits, threshold
from fl_mdisc.models import set_params
from fl_mdisc.sampling import stream_step
from fl_mdisc.train import local_sgd

from . import runtime


def batch_tensors(cfg, plan, idx, rnd, pid, salt=0):
    x = to_float(plan.ds.x_train[idx])
    if cfg.dataset.augment:
        x = augment(x, torch.Generator().manual_seed(runtime.seed_for(cfg.seed, rnd, pid, salt)))
    dev = runtime.device(cfg)
    return x.to(dev), torch.as_tensor(plan.ds.y_train[idx]).to(dev)


def train_honest(cfg_json: str, params: list, conf, pid: int) -> tuple[list, dict]:
    t0 = time.time()
    cfg = runtime.config(cfg_json)
    plan = runtime.plan(cfg_json)
    torch.set_num_threads(int(cfg.client_threads))  # the actor may have run the attacker before
    rnd, phase = int(conf["server-round"]), str(conf["phase"])
    model = runtime.model_from(cfg_json, str(conf["start-path"]), str(conf["start-sha"]))
    set_params(model, params)
    torch.manual_seed(runtime.seed_for(cfg.seed, rnd, pid, 1))
    idx = stream_batch(plan.partitions[pid], int(cfg.fed.batch_size), int(cfg.seed), pid, stream_step(cfg, rnd, pid))
    x, y = batch_tensors(cfg, plan, idx, rnd, pid)
    poisoned = 0
    x_clean = x
    if pid in plan.victims:
        x, y = _poison_stream(cfg_json, cfg, plan, model, x, y, phase, conf)
        poisoned = 1
    md_log = _md_log(cfg_json, cfg, conf, model, x_clean, x) if cfg.get("log_md") else {}
    md_client, corrected, steps_total = 0.0, 0, 0
    if cfg.defense.name == "dsc":
        hist = runtime.model_from(cfg_json, str(conf["hist-path"]), str(conf["hist-sha"]))
        P = threshold(float(conf["dsc-mu"]), float(conf["dsc-tau"]), rnd - 1)
        x, steps, md_before = dsc_correct(model, hist, x, y, P, cfg.defense.eps, cfg.defense.step_size,
                                          int(cfg.defense.max_steps), bool(cfg.defense.per_sample),
                                          cfg.defense.measure)
        corrected, steps_total = int((steps > 0).sum()), int(steps.sum())
        md_client = float(md_before.mean())
    elif cfg.defense.name == "at":
        x = at_correct(model, x, y, cfg.defense.eps, cfg.defense.step_size, int(cfg.defense.max_steps),
                       float(cfg.defense.kl_weight))
        corrected, steps_total = len(x), len(x) * int(cfg.defense.max_steps)
    loss = local_sgd(model, x, y, float(cfg.fed.client_lr), int(cfg.fed.local_steps))
    new = np_list(model)
    metrics = {"num-examples": len(y), "train-loss": loss, "md-client": md_client, "dsc-corrected": corrected,
               "dsc-steps": steps_total, "poisoned": poisoned, "seconds": time.time() - t0, **md_log}
    return new, metrics


def _poison_stream(cfg_json, cfg, plan, model, x, y, phase, conf):
    """Placement (b): the attacker replaces a victim's incoming batch with a poisoned one crafted at theta_t."""
    a = cfg.attack
    dev = runtime.device(cfg)
    val_idx, trig_idx, _ = plan.attacker[-1]
    xv, yv = to_float(plan.ds.x_train[val_idx]).to(dev), torch.as_tensor(plan.ds.y_train[val_idx]).to(dev)
    yt = torch.as_tensor(plan.ds.y_train[trig_idx]).to(dev)
    xt = runtime.adversarial_trigger(cfg_json, -1, str(conf["start-path"]), str(conf["start-sha"]))
    if phase == "trigger":
        return xt, yt
    h = second_order_term(model, xt, yt, xv, yv)
    return craft_poison(model, x, y, h, a.eps, a.step_size, int(a.steps), float(a.gamma),
                        **md_aware(cfg_json, a, conf)), y


def md_aware(cfg_json, a, conf) -> dict:
    """craft_poison's MD-aware arguments (Eq. 21): beta, md_form and theta* = the burn-in historical checkpoint the
    defender's DSC uses (the adaptive attacker of the seed paper's Table 3 knows it); nothing when beta = 0."""
    beta = float(a.beta or 0.0)
    if beta == 0.0:
        return {}
    hist = runtime.model_from(cfg_json, str(conf["hist-path"]), str(conf["hist-sha"]))
    return {"beta": beta, "hist_model": hist, "md_form": str(a.md_form)}


def _md_log(cfg_json, cfg, conf, model, x_clean, x_in) -> dict:
    """Per-sample MD summaries of the clean batch and of the batch that actually arrived (for the MD plots)."""
    hist = runtime.model_from(cfg_json, str(conf["hist-path"]), str(conf["hist-sha"]))
    with torch.no_grad():
        hist.eval()
        model.eval()
        out = {}
        for name, xx in (("clean", x_clean), ("in", x_in)):
            md = md_from_logits(hist(xx), model(xx)).cpu().numpy()
            out.update({f"md-{name}-mean": float(md.mean()), f"md-{name}-p10": float(np.percentile(md, 10)),
                        f"md-{name}-p50": float(np.percentile(md, 50)), f"md-{name}-p90": float(np.percentile(md, 90))})
    return out


def np_list(model) -> list[np.ndarray]:
    return [p.detach().cpu().numpy().copy() for p in model.parameters() if p.requires_grad]
