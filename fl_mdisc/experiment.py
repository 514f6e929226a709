"""Who holds which data in a run: split, client partitions, roles, attacker data (shared by server and clients).

Roles: with ``f = fed.num_malicious``, partitions ``N-f .. N-1`` are malicious when an attack that needs a
malicious client is active (with ``attack=none`` they behave honestly: the clean oracle has the same data).
For ``attack=stream_poison`` (placement (b)) the attacker is not a client: its validation/trigger data are
carved from the pool before partitioning, and the honest clients ``0 .. victims-1`` receive poisoned batches.

Several attackers collude as the attack's authors intend (Pang et al.: one adversary controlling the malicious
clients): they share one validation batch and one trigger batch (so they craft the same trigger and pursue the
same objective), each keeps its own stream (its own partition minus the shared batches). What each attacker knows:
the global model it receives (as any participant), the shared batches and the protocol; not the honest clients'
data or updates. ``fed.attacker_data``: ``partition`` takes the shared batches from the attackers' own partitions
(pooled when f >= 2; with f = 1 exactly the earlier single-attacker split); ``pool`` carves them from the clients'
pool before partitioning (the attackers bring their own data: large federations, where a partition holds one
batch, need this).

The run seed redraws everything random in the plan: the partitions (IID shuffle or Dirichlet draw), the
attacker's validation/trigger/stream split and the stream-poisoning attacker's data (the stream order and the
augmentation are seeded per round by the clients). The split burn-in | probe | pool itself is fixed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from omegaconf import OmegaConf

from .config import OMNISCIENT_ATTACKS, config_hash
from .data import ArrayDataset, Split, attacker_split, load_for, partition_pool, split_of
from .errors import DataError

ATTACKER_VAL_SIZE, ATTACKER_TRIGGER_SIZE = 500, 100  # conf/attack/{lambda_update,accumulative}.yaml
MALICIOUS_ATTACKS = ("accumulative", "lambda_update", "adaptive_update", "nan", "shape", "scale", "spoof", "crash",
                     "hang", *OMNISCIENT_ATTACKS)


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


def min_partition_size(cfg, pool_size: int) -> int:
    """Dirichlet's minimum partition size: ``fed.min_partition_size``, else one batch capped at pool / (4 N)."""
    m = cfg.fed.get("min_partition_size")
    if m is not None:
        return int(m)
    return max(1, min(int(cfg.fed.batch_size), pool_size // (4 * int(cfg.fed.num_clients))))


def carved_for_attackers(cfg) -> tuple[int, int]:
    """(validation, trigger) sizes carved from the pool with ``fed.attacker_data=pool``, whatever the attack, so that
    the clean run (attack=none has no sizes: the lambda-update config's) has the poisoned run's partitions."""
    return (int(cfg.attack.get("val_size", ATTACKER_VAL_SIZE)),
            int(cfg.attack.get("trigger_size", ATTACKER_TRIGGER_SIZE)))


def attacker_data(parts: list[np.ndarray], malicious: list[int], val_size: int, trigger_size: int, seed: int,
                  shared: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    """partition id -> (validation, trigger, stream) for colluding attackers (shared validation and trigger).

    ``shared`` given (``fed.attacker_data=pool``): those batches, and each attacker streams its whole partition. Otherwise
    one attacker splits its own partition as before; several pool their partitions, take the shared batches from
    the union (seeded by the lowest attacker id) and each streams what is left of its own partition."""
    if shared is not None:
        return {pid: (shared[0], shared[1], parts[pid]) for pid in malicious}
    if len(malicious) == 1:
        pid = malicious[0]
        return {pid: attacker_split(parts[pid], val_size, trigger_size, seed * 1009 + pid)}
    union = np.concatenate([parts[p] for p in malicious])
    val, trig, _ = attacker_split(union, val_size, trigger_size, seed * 1009 + malicious[0])
    taken = np.concatenate([val, trig])
    out = {}
    for pid in malicious:
        stream = np.setdiff1d(parts[pid], taken)
        if len(stream) == 0:
            raise DataError(f"attacker {pid} has no stream left after the shared validation/trigger batches; "
                            "set fed.attacker_data=pool or use fewer clients")
        out[pid] = (val, trig, stream)
    return out


def make_plan(cfg) -> Plan:
    """Build (and cache per process) the data plan of a run."""
    key = _plan_key(cfg)
    if key in _CACHE:
        return _CACHE[key]
    ds = load_for(cfg)
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
    if att != "stream_poison" and f > 0 and cfg.fed.attacker_data == "pool":
        nv, nt = carved_for_attackers(cfg)
        k = nv + nt
        if len(pool) <= k + n:
            raise DataError(f"the pool ({len(pool)} images) cannot give the attackers {k} images and the {n} clients "
                            "their partitions; lower split.burnin or attack.val_size/trigger_size")
        perm = np.random.default_rng([seed, 3571]).permutation(pool)
        shared = (perm[:nv], perm[nv:k])
        pool = perm[k:]
    else:
        shared = None
    parts = partition_pool(pool, ds.y_train, n, cfg.fed.partition, float(cfg.fed.dirichlet_alpha), seed=seed,
                           min_size=min_partition_size(cfg, len(pool)),
                           classes_per_client=int(cfg.fed.get("classes_per_client") or 2))
    malicious = frozenset(range(n - f, n)) if att in MALICIOUS_ATTACKS else frozenset()
    victims = frozenset(range(int(cfg.attack.victims))) if att == "stream_poison" else frozenset()
    if att in ("accumulative", "lambda_update", "adaptive_update") and malicious:
        attacker.update(attacker_data(parts, sorted(malicious), int(cfg.attack.val_size), int(cfg.attack.trigger_size),
                                      seed, shared))
    plan = Plan(ds, split, parts, malicious, victims, attacker)
    _CACHE.clear()
    _CACHE[key] = plan
    return plan

