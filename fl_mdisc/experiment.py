"""Who holds which data in a run: split, client partitions, roles, attacker data (shared by server and clients).

Roles: with ``f = fed.num_malicious``, partitions ``N-f .. N-1`` are malicious when an attack that needs a
malicious client is active (with ``attack=none`` they behave honestly: the clean oracle has the same data).
For ``attack=stream_poison`` (placement (b)) the attacker is not a client: its validation/trigger data are
carved from the pool before partitioning, and the honest clients ``0 .. victims-1`` receive poisoned batches.

The run seed redraws everything random in the plan: the partitions (IID shuffle or Dirichlet draw), the
attacker's validation/trigger/stream split and the stream-poisoning attacker's data (the stream order and the
augmentation are seeded per round by the clients). The split burn-in | probe | pool itself is fixed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from omegaconf import OmegaConf

from .config import config_hash
from .data import ArrayDataset, Split, attacker_split, load_dataset, split_of, partition_pool

MALICIOUS_ATTACKS = ("accumulative", "lambda_update", "nan", "shape", "scale", "crash")


@dataclass
class Plan:
    ds: ArrayDataset
    split: Split
    partitions: list[np.ndarray]
    malicious: frozenset
    victims: frozenset
    attacker: dict  # partition id (-1: the stream-poisoning attacker) -> (val, trigger, stream-or-None) indices


def _plan_key(cfg) -> str:
    c = OmegaConf.to_container(cfg, resolve=True)
    return config_hash({k: c.get(k) for k in ("dataset", "data_root", "split", "fed", "attack", "seed")})


_CACHE: dict[str, Plan] = {}


def make_plan(cfg) -> Plan:
    """Build (and cache per process) the data plan of a run."""
    key = _plan_key(cfg)
    if key in _CACHE:
        return _CACHE[key]
    ds = load_dataset(cfg.dataset.name, cfg.data_root)
    split = split_of(cfg, len(ds.y_train))
    pool = split.pool
    n, f = int(cfg.fed.num_clients), int(cfg.fed.num_malicious)
    att = cfg.attack.name
    attacker = {}
    seed = int(cfg.seed)
    if att == "stream_poison":
        nv, k = int(cfg.attack.val_size), int(cfg.attack.val_size) + int(cfg.attack.trigger_size)
        pool = np.random.default_rng([seed, 3571]).permutation(split.pool)
        attacker[-1] = (pool[:nv], pool[nv:k], None)
        pool = pool[k:]
    parts = partition_pool(pool, ds.y_train, n, cfg.fed.partition, float(cfg.fed.dirichlet_alpha), seed=seed)
    malicious = frozenset(range(n - f, n)) if att in MALICIOUS_ATTACKS else frozenset()
    victims = frozenset(range(int(cfg.attack.victims))) if att == "stream_poison" else frozenset()
    if att in ("accumulative", "lambda_update"):
        for pid in malicious:
            attacker[pid] = attacker_split(parts[pid], int(cfg.attack.val_size), int(cfg.attack.trigger_size),
                                           seed * 1009 + pid)
    plan = Plan(ds, split, parts, malicious, victims, attacker)
    _CACHE.clear()
    _CACHE[key] = plan
    return plan

