"""Centralised burn-in (pre-training) with an on-disk cache, and the DSC threshold estimate.

Burn-in (Pang et al. 2021 / Zhu et al. 2023, official ``train_cifar.py``; hyper-parameters per preset):
SGD(lr, momentum 0.9, weight decay 1e-4) with crop+flip on the burn-in split; checkpoints are the
historical model theta_hist (epoch ``hist_epoch``; the paper: 20 of 40) and the start model theta_start (last
epoch). ``burnin.seed`` (the initialisation and the batch order/augmentation; null: the run seed) is part of
the cache key: a table's seeds redraw the burn-in too, so its spread includes what differs between machines
(CPU kernels round differently, and a second burn-in seed is our stand-in for "another machine"). The official
code has one unseeded burn-in for all runs; here each burn-in is seeded and reproducible on one machine.

Cache: ``<cache_dir>/burnin-<key>/`` where ``key`` hashes everything that determines the checkpoints (dataset,
data fingerprint, model, burn-in hyper-parameters, split). Each file's SHA-256 is stored in ``meta.json``
and verified on load; a corrupted or incomplete entry is rebuilt, never used.

DSC threshold estimate (Sec. 4.1, "estimated based on the value of the controllable clean samples used in
the burn-in phase"): from theta_start, ``calib_steps`` SGD steps (server lr/momentum, batch = B x clients) on
clean burn-in batches; before each step the ``calib_quantile`` quantile of per-sample MD of a fresh clean
batch is recorded; (mu, tau) = :func:`fl_mdisc.md.fit_threshold` of those values against the step index.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .config import config_hash
from .data import augment, burnin_size, load_for, split_of, to_float
from .errors import CheckpointError
from .md import fit_threshold, md_per_sample
from .models import build_model
from .train import evaluate, pick_device

FORMAT = 1


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def burnin_key(cfg) -> dict:
    ds = load_for(cfg)
    fp = hashlib.sha256(ds.x_train[:64].tobytes() + ds.y_train.tobytes()).hexdigest()[:16]
    return {
        "format": FORMAT, "dataset": cfg.dataset.name, "data_fp": fp, "n_train": int(len(ds.y_train)),
        "model": {k: cfg.model[k] for k in ("name", "width")}, "seed": burnin_seed(cfg),
        "burnin": {k: cfg.burnin[k] for k in ("epochs", "hist_epoch", "lr", "warmup_epochs", "momentum",
                                              "weight_decay", "batch_size")},
        "augment": bool(cfg.dataset.augment), "split": {"burnin": burnin_size(cfg.split.burnin, len(ds.y_train)), "probe": cfg.split.probe,
                                                            "calib": int(cfg.split.calib or 0)},
    }


def burnin_seed(cfg) -> int:
    """``burnin.seed``, else the run seed (resolve_defaults fills it; this also covers older configs)."""
    s = cfg.burnin.get("seed")
    return int(cfg.seed if s is None else s)


def _train(cfg, model, x, y, x_test, y_test, dev, log):
    b = cfg.burnin
    opt = torch.optim.SGD(model.parameters(), lr=b.lr, momentum=b.momentum, weight_decay=b.weight_decay)
    n = len(x)
    steps_per_epoch = n // b.batch_size
    warm = b.warmup_epochs * steps_per_epoch
    gen = torch.Generator().manual_seed(burnin_seed(cfg))
    hist_state, history = None, []
    step = 0
    for epoch in range(1, b.epochs + 1):
        model.train()
        t0 = time.time()
        perm = torch.randperm(n, generator=gen)
        for i in range(steps_per_epoch):
            idx = perm[i * b.batch_size: (i + 1) * b.batch_size]
            xb = to_float(x[idx.numpy()])
            if cfg.dataset.augment:
                xb = augment(xb, gen)
            xb, yb = xb.to(dev), torch.as_tensor(y[idx.numpy()]).to(dev)
            if warm:
                for g in opt.param_groups:
                    g["lr"] = b.lr * min(1.0, (step + 1) / warm)
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
            step += 1
        acc, _ = evaluate(model, x_test, y_test, device=dev)
        history.append({"epoch": epoch, "test_accuracy": acc, "seconds": round(time.time() - t0, 2)})
        log(f"burn-in epoch {epoch}/{b.epochs}: test accuracy {acc:.2f}% ({time.time() - t0:.1f}s)")
        if epoch == b.hist_epoch:
            hist_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return hist_state, history


def _valid_entry(d: Path) -> bool:
    meta_p = d / "meta.json"
    if not meta_p.is_file():
        return False
    try:
        meta = json.loads(meta_p.read_text())
        return all(_sha256(d / name) == sha for name, sha in meta["sha256"].items())
    except (OSError, ValueError, KeyError):
        return False


def ensure_burnin(cfg, log=print) -> dict:
    """Return the cache entry {dir, hist, start, meta}; train and cache it first on a miss or a bad entry."""
    key = burnin_key(cfg)
    d = Path(cfg.cache_dir) / f"burnin-{config_hash(key)}"
    if d.exists() and not _valid_entry(d):
        log(f"burn-in cache {d} is corrupted or incomplete (checksum mismatch): rebuilding it")
        shutil.rmtree(d, ignore_errors=True)
    if not d.exists():
        log(f"burn-in cache miss: training {cfg.model.name} for {cfg.burnin.epochs} epochs "
            f"(burn-in seed {burnin_seed(cfg)}) -> {d}")
        ds = load_for(cfg)
        split = split_of(cfg, len(ds.y_train))
        dev = pick_device(cfg)
        torch.manual_seed(burnin_seed(cfg))
        model = build_model(cfg.model, cfg.dataset).to(dev)
        t0 = time.time()
        hist, history = _train(cfg, model, ds.x_train[split.burnin_train], ds.y_train[split.burnin_train],
                               ds.x_test, ds.y_test, dev, log)
        start = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        tmp = d.with_name(d.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        torch.save(hist, tmp / "hist.pt")
        torch.save(start, tmp / "start.pt")
        meta = {"key": key, "history": history, "seconds": round(time.time() - t0, 1),
                "hist_accuracy": history[cfg.burnin.hist_epoch - 1]["test_accuracy"],
                "start_accuracy": history[-1]["test_accuracy"],
                "sha256": {n: _sha256(tmp / n) for n in ("hist.pt", "start.pt")}}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        tmp.rename(d)
    else:
        log(f"burn-in cache hit: {d}")
    meta = json.loads((d / "meta.json").read_text())
    return {"dir": str(d), "hist": str(d / "hist.pt"), "start": str(d / "start.pt"), "meta": meta,
            "hist_sha": meta["sha256"]["hist.pt"], "start_sha": meta["sha256"]["start.pt"]}


def load_state(path: str, expected_sha: str | None = None) -> dict:
    p = Path(path)
    if expected_sha is not None and _sha256(p) != expected_sha:
        raise CheckpointError(f"{p} does not match its checksum; delete {p.parent} to rebuild the burn-in")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"cannot read checkpoint {p} ({exc.__class__.__name__}); delete {p.parent} to rebuild") from None


def load_model(cfg, path: str, expected_sha: str | None = None, device="cpu"):
    model = build_model(cfg.model, cfg.dataset)
    try:
        model.load_state_dict(load_state(path, expected_sha))
    except RuntimeError:
        raise CheckpointError(f"checkpoint {path} does not fit model {cfg.model.name}; delete it to rebuild") from None
    return model.to(device)


def estimate_dsc_threshold(cfg, entry: dict, log=print) -> dict:
    """(mu, tau) for DSC from clean burn-in data along a short clean trajectory from theta_start (cached)."""
    b, fed = cfg.burnin, cfg.fed
    key = {"steps": b.calib_steps, "q": b.calib_quantile, "lr": fed.server_lr, "mom": fed.server_momentum,
           "B": fed.batch_size, "n": fed.num_clients, "measure": cfg.defense.measure}
    path = Path(entry["dir"]) / f"dsc-threshold-{config_hash(key)}.json"
    if path.is_file():
        return json.loads(path.read_text())
    ds = load_for(cfg)
    split = split_of(cfg, len(ds.y_train))
    hist = load_model(cfg, entry["hist"], entry["hist_sha"])
    model = load_model(cfg, entry["start"], entry["start_sha"])
    opt = torch.optim.SGD(model.parameters(), lr=fed.server_lr, momentum=fed.server_momentum)
    rng = np.random.default_rng(12345)
    pool = rng.permutation(split.burnin_train)
    bt, bm = fed.batch_size * max(1, fed.num_clients), fed.batch_size
    steps, values = [], []
    pos = 0
    for m in range(b.calib_steps):
        probe = pool[np.arange(pos, pos + bm) % len(pool)]  # wraps around on a small burn-in set
        pos += bm
        md = md_per_sample(hist, model, to_float(ds.x_train[probe]), key["measure"])
        steps.append(m)
        values.append(float(torch.quantile(md, b.calib_quantile)))
        idx = pool[np.arange(pos, pos + bt) % len(pool)]
        pos += bt
        model.train()
        opt.zero_grad()
        F.cross_entropy(model(to_float(ds.x_train[idx])), torch.as_tensor(ds.y_train[idx])).backward()
        opt.step()
    mu, tau = fit_threshold(steps, values)
    out = {"mu": mu, "tau": tau, "quantile": b.calib_quantile, "steps": steps, "values": values,
           "source": "clean burn-in samples along a clean trajectory from theta_start"}
    path.write_text(json.dumps(out, indent=1))
    log(f"DSC threshold estimated from clean burn-in data: P = {mu:.4f} + {tau:.5f} * m")
    return out
