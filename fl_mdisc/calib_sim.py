"""The simulated clean federation the server calibrates on (:mod:`fl_mdisc.calibration` turns it into C and P_t).

The rule. The server holds clean data of its own (``split.calib``, held out of the burn-in like the probe set)
and knows the protocol (batch size B, client lr, local steps, server lr and momentum, number of clients). From
theta_start it simulates a clean federation of n_h honest clients for R_c = :func:`calib_rounds` rounds, n_h = N
when the server assumes nothing about the attackers, N - f with ``assume.f = f`` (:mod:`fl_mdisc.assumption`; the
simulated true attacker count is never read): each simulated client k takes a fresh batch of B from its own
permutation of the calibration set (crop + flip as the clients do), computes its update Delta_k with the clients'
local SGD, and the server applies FedAvg of the GC-clipped updates with its SGD + momentum (the trajectory GC and
DGC follow on clean data).

What it records: every simulated update's norm (in ``strategy.norm``) over a 10-round pre-pass without clipping,
from which C is the median; with DGC's paper gate also the MD of every GC-clipped candidate theta_t + eta f_k
Delta_k on the server's probe set and MD(theta_t), i.e. DGC's statistic s_k = MD_k - MD(theta_t) exactly as
:class:`strategies.dgc.DiscrepancyAwareClipping` measures it.

Realistic federations. The simulation follows the protocol the server announced: with K of N clients per round,
K_h honest clients take part each round (K, or K - round(K f / N) with ``assume.f = f``; drawn like the real sample,
:func:`fl_mdisc.sampling.sample_round`). With non-IID data (``fed.partition``) the simulation draws its K_h per round
from a population of at least :data:`SIMULATED_POPULATION` (100) simulated clients whose label proportions and
partition sizes come from the real partitioner's law (:func:`label_skew`: the same flwr-datasets partitioner, N, alpha
and minimum size on a balanced stand-in pool); each simulated client's batches (size min(B, its partition size)) are
drawn from the server's calibration set with its label proportions. The server knows the law, not the clients' data.

Differences from the paper: the paper publishes no DGC and no rule for C; this is our design. What it assumes:
the server's calibration data are clean and distributed like the clients' in law; label skew is simulated,
other heterogeneity (feature shift, unequal sizes) is not.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from .assumption import assumed_f
from .data import augment, burnin_size, load_for, split_of, stream_batch, to_float
from .md import ProbeMD
from .models import get_params, set_params
from .train import local_sgd
from .updates import server_sgd_step, update_norm

SIMULATED_ID_OFFSET = 50_000  # simulated client k draws its stream as partition id k + this (apart from the real ids)


def measured_statistic(cfg) -> str | None:
    """The DGC statistic the simulation measures, ``increase`` (s_k = MD_k - MD(theta_t), as
    :class:`strategies.dgc.DiscrepancyAwareClipping`): only the paper gate fits a threshold on it (None: C only)."""
    s = cfg.strategy
    return "increase" if s.name == "dgc" and s.gate == "paper" else None


def probe_size(cfg) -> int:
    """The probe images DGC measures MD on: ``strategy.probe_size`` for DGC, ``split.probe`` otherwise (unused)."""
    return int(cfg.strategy.probe_size) if cfg.strategy.name == "dgc" else int(cfg.split.probe)


def n_honest(cfg) -> int:
    """The honest clients the server simulates: N, or N - f with ``assume.f = f`` (never the simulated truth)."""
    return max(1, int(cfg.fed.num_clients) - (assumed_f(cfg) or 0))


def calib_rounds(cfg) -> int:
    """R_c = min(``strategy.calib_rounds``, ceil(``strategy.calib_updates`` / K_h)): the simulation's cost is capped
    at about ``calib_updates`` simulated honest updates (400: 100 rounds of the 4 honest clients of the default
    5-client federation, 45 rounds of 9 honest participants), never fewer than 20 rounds."""
    s = cfg.strategy
    R = int(s.calib_rounds)
    cap = s.get("calib_updates")  # only DGC's paper gate measures many rounds; GC and ByzFL use the first 10
    if cap is None:
        return R
    return max(min(R, 20), min(R, int(math.ceil(int(cap) / honest_per_round(cfg)))))


def honest_per_round(cfg) -> int:
    """K_h: the honest participants of a round, K minus the attackers expected among K."""
    from .sampling import clients_per_round

    n, k, f = int(cfg.fed.num_clients), clients_per_round(cfg), assumed_f(cfg) or 0
    if k == n:
        return n_honest(cfg)
    return max(1, min(n_honest(cfg), k - int(round(k * f / n))))


SIMULATED_POPULATION = 100  # non-IID: simulated honest clients drawn from the partitioner's law, at least


def simulated_population(cfg) -> int:
    """How many distinct honest clients the simulation draws from: the real N - f, but at least
    :data:`SIMULATED_POPULATION` under non-IID data, where the honest statistic varies mostly *between* clients
    (a handful of simulated clients would not show the spread of the real ones; docs/history.md)."""
    nh = n_honest(cfg)
    if str(cfg.fed.partition) == "iid":
        return nh
    return max(nh, SIMULATED_POPULATION)


def label_skew(cfg, n_clients: int, seed: int, n_train: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(label proportions, partition sizes) of ``n_clients`` simulated honest clients for ``fed.partition``; None
    for IID.

    The law is the real one: the same flwr-datasets partitioner with the same N, alpha (or classes per client) and
    minimum size, run on a stand-in pool of the real pool's size with balanced labels (the server knows the label
    marginals, not the clients' data), redrawn with new seeds until ``n_clients`` honest partitions (ids 0..N-f-1 of
    each draw) are collected."""
    if str(cfg.fed.partition) == "iid":
        return None
    from .experiment import carved_for_attackers, min_partition_size
    from .data import partition_pool

    n, f = int(cfg.fed.num_clients), assumed_f(cfg) or 0
    num_classes = int(cfg.dataset.num_classes)
    pool_size = n_train - burnin_size(cfg.split.burnin, n_train)
    if cfg.fed.attacker_data == "pool":
        pool_size -= sum(carved_for_attackers(cfg))  # carved first whatever the attack (fl_mdisc/experiment.py)
    labels = np.arange(pool_size) % num_classes
    pool = np.arange(pool_size)
    props, sizes, rep = [], [], 0
    while len(props) < n_clients:
        parts = partition_pool(pool, labels, n, str(cfg.fed.partition), float(cfg.fed.dirichlet_alpha),
                               seed=seed * 7_907 + rep, min_size=min_partition_size(cfg, pool_size),
                               classes_per_client=int(cfg.fed.get("classes_per_client") or 2))
        for part in parts[: max(1, n - f)]:
            h = np.bincount(labels[part], minlength=num_classes).astype(np.float64)
            props.append(h / h.sum())
            sizes.append(len(part))
        rep += 1
    return np.asarray(props[:n_clients]), np.asarray(sizes[:n_clients])


class SimulatedFederation:
    """The simulated clean federation (server side, no Flower): honest updates from the calibration set."""

    def __init__(self, cfg, entry, device="cpu", data=None, probe=None) -> None:
        from .burnin import load_model

        ds = load_for(cfg)
        split = split_of(cfg, len(ds.y_train))
        if data is not None:  # another party's clean images (the DGC-aware attacker's own, fl_mdisc/adaptive.py)
            self.data = np.asarray(data)
        else:
            self.data = split.calib if len(split.calib) else split.burnin_train
        self.seen_by_burnin = data is None and not len(split.calib)
        self.ds, self.cfg, self.dev = ds, cfg, device
        self.model = load_model(cfg, entry["start"], entry["start_sha"], device)
        self.start = get_params(self.model)
        self.hist = get_params(load_model(cfg, entry["hist"], entry["hist_sha"], device))
        size = probe_size(cfg)
        probe_x = to_float(ds.x_train[split.probe[:size] if probe is None else np.asarray(probe)]).to(device)
        self.probe = ProbeMD(load_model(cfg, entry["start"], entry["start_sha"], device), probe_x, self.hist)
        self.seed = int(cfg.burnin.seed)
        self.B = int(cfg.fed.batch_size)
        self.population = simulated_population(cfg)
        law = label_skew(cfg, self.population, self.seed, len(ds.y_train))
        self.skew, self.sizes = (None, None) if law is None else law
        labels = ds.y_train[self.data]
        self.by_class = [self.data[labels == c] for c in range(int(cfg.dataset.num_classes))]
        if self.skew is not None and any(len(b) == 0 for b in self.by_class):  # a class absent from the data at hand:
            have = np.array([len(b) > 0 for b in self.by_class], dtype=np.float64)  # its share goes to the others
            self.skew = self.skew * have
            empty = self.skew.sum(1) <= 0
            self.skew[empty] = have  # a simulated client that held only absent classes: uniform over the present ones
            self.skew = self.skew / self.skew.sum(1, keepdims=True)
        if len(self.data) < self.B:
            raise ValueError(f"the calibration set has {len(self.data)} images, fewer than one batch of {self.B}; "
                             "raise split.calib")

    def batch(self, rnd: int, k: int) -> np.ndarray:
        """Simulated client k's batch of round rnd: IID from its own permutation of the calibration set, or with
        its label proportions (non-IID)."""
        if self.skew is None:
            return stream_batch(self.data, self.B, self.seed, SIMULATED_ID_OFFSET + k, rnd - 1)
        rng = np.random.default_rng([self.seed, k, rnd, 6311])
        counts = rng.multinomial(min(self.B, int(self.sizes[k])), self.skew[k])  # a small partition: a small batch
        return np.concatenate([rng.choice(self.by_class[c], size=int(m), replace=int(m) > len(self.by_class[c]))
                               for c, m in enumerate(counts) if m > 0])

    def update(self, params, rnd: int, k: int) -> list[np.ndarray]:
        cfg = self.cfg
        idx = self.batch(rnd, k)
        x = to_float(self.ds.x_train[idx])
        if cfg.dataset.augment:
            x = augment(x, torch.Generator().manual_seed((self.seed * 7_919 + rnd * 104_729 + k) % (2**31 - 1)))
        y = torch.as_tensor(self.ds.y_train[idx])
        set_params(self.model, params)
        local_sgd(self.model, x.to(self.dev), y.to(self.dev), float(cfg.fed.client_lr), int(cfg.fed.local_steps))
        return [n.astype(np.float64) - p.astype(np.float64) for n, p in zip(get_params(self.model), params)]


def simulate(cfg, entry, log=print, device="cpu", data=None, probe=None) -> dict:
    """Run the simulated clean federation; return the per-update records and C. ``data`` / ``probe``: image indices
    replacing the server's calibration and probe sets (the DGC-aware attacker runs the rule on its own images)."""
    from .sampling import sample_round

    sim = SimulatedFederation(cfg, entry, device, data=data, probe=probe)
    nh, kh = n_honest(cfg), honest_per_round(cfg)
    R = calib_rounds(cfg)
    lr, mom, eta = float(cfg.fed.server_lr), float(cfg.fed.server_momentum), float(cfg.fed.server_lr)
    stat = measured_statistic(cfg)
    kind = str(cfg.strategy.norm)
    t0 = time.time()

    def trajectory(rounds: int, clip_norm: float | None, measure: bool):
        theta = [a.copy() for a in sim.start]
        v = None
        recs = []
        for rnd in range(1, rounds + 1):
            pop = sim.population
            who = range(nh) if kh == nh == pop else sample_round(sim.seed + 7, rnd, pop, kh)
            ups = [sim.update(theta, rnd, k) for k in who]
            norms = [update_norm(u, kind) for u in ups]
            facs = [1.0 if clip_norm is None or n <= clip_norm else clip_norm / n for n in norms]
            if measure:
                cands = [[(t + eta * f * u).astype(t.dtype) for t, u in zip(theta, up)] for up, f in zip(ups, facs)]
                mds = sim.probe(cands + [theta])
                base = mds.pop()
                for k, n, md in zip(who, norms, mds):
                    recs.append({"round": rnd, "client": k, "norm": n, "md": md, "md_base": base})
            else:
                recs.extend({"round": rnd, "client": k, "norm": n} for k, n in zip(who, norms))
            d = [-sum(f * u[i] for f, u in zip(facs, ups)) / len(ups) for i in range(len(theta))]  # theta - mean(theta_k)
            theta, v = server_sgd_step(theta, d, v, lr, mom)
        return recs

    pre = trajectory(min(10, R), None, measure=False)
    first = [r["norm"] for r in pre]
    given = cfg.strategy.get("clip_norm")
    C = float(np.median(first)) if given is None else float(given)
    recs = trajectory(R, C, measure=True) if stat is not None else pre  # GC needs C only
    out = {"clip_norm": C, "clip_norm_median": float(np.median(first)), "clip_norm_p10": float(np.percentile(first, 10)),
           "clip_norm_p90": float(np.percentile(first, 90)), "n_honest": nh, "honest_per_round": kh, "population": sim.population, "rounds": R,
           "records": recs, "seconds": round(time.time() - t0, 1),
           "data": "burn-in training images (split.calib=0)" if sim.seen_by_burnin else
           f"the server's calibration set ({len(sim.data)} images held out of the burn-in)" if data is None else
           f"{len(sim.data)} given images"}
    return out


def statistic_values(recs: list[dict]) -> tuple[list[int], list[float]]:
    """(steps t = round - 1, s_k = MD_k - MD(theta_t)) of the simulated honest updates."""
    return [r["round"] - 1 for r in recs], [r["md"] - r["md_base"] for r in recs]
