"""Self-calibration of the server defences: GC's bound C and DGC's threshold, computed where the run happens.

Why: the burn-in differs across machines (CPU kernels round differently), so any C, mu or tau fitted to one
machine's checkpoints is wrong on the next one (measured: a threshold fitted on one machine flagged 66 % of
honest updates on another). The paper prescribes this for DSC's threshold ("estimated from clean data in the
burn-in phase", Sec. 4.1; :func:`fl_mdisc.burnin.estimate_dsc_threshold`); we do the same for the server.

The rule. The server holds clean data of its own (``split.calib``, held out of the burn-in like the probe set)
and knows the protocol (batch size B, client lr, local steps, server lr and momentum, number of clients). From
theta_start it simulates a clean federation of n_h = N - f honest clients for R_c = :func:`calib_rounds`
rounds: each simulated client k takes a fresh batch of B from its own permutation of the calibration set
(crop + flip as the clients do), computes its update Delta_k with the clients' local SGD, and the server applies
FedAvg of the GC-clipped updates with its SGD + momentum (the trajectory GC and DGC follow on clean data).

* C = median of ||Delta_k|| (in ``strategy.norm``: L2, or L-infinity) over rounds 1..10 (a 10-round pre-pass without clipping), as the earlier
  hand-run calibration did (DESIGN.md section 5).
* For every simulated update DGC's statistic s_k is measured exactly as the strategy measures it
  (:func:`strategies.clipping.dgc_statistic` semantics, here computed with the same probe set and candidate
  theta_t + eta f_k Delta_k), and the threshold P_t = mu + tau * t is fitted for a target false-positive rate
  alpha = ``strategy.target_fpr``: tau = least-squares slope of s over t (clipped at 0), mu = the order
  statistic of the detrended values s - tau * t with floor(alpha n) values above it, so that at most alpha of
  the n simulated honest updates lie above P_t (:func:`fit_fpr_threshold`).

Cache: ``<burn-in dir>/calibration-<key>.json``; the key holds every input that changes the result (the
burn-in checkpoints' SHA-256, split, protocol, statistic, probe size, historical-model mode, alpha, R_c).
Explicit ``strategy.clip_norm`` / ``strategy.mu`` + ``strategy.tau`` (or ``calib.*``) override the rule.

Realistic federations. The simulation follows the protocol the server announced: with K of N clients per round
K_h = K - round(K f / N) honest clients take part each round (drawn like the real sample,
:func:`fl_mdisc.sampling.sample_round`). With non-IID data (``fed.partition``) the honest statistic varies mostly
between clients, so the simulation draws its K_h per round from a population of at least ``strategy.calib_population``
(100) simulated clients whose label proportions and partition sizes come from the real partitioner's law
(:func:`label_skew`: the same flwr-datasets partitioner, N, alpha and minimum size on a balanced stand-in pool); each
simulated client's batches (size min(B, its partition size)) are drawn from the server's calibration set with its
label proportions. The server knows the law, not the clients' data.

The FPR window (``strategy.fpr_window``). Under non-IID data the simulated population is a stand-in for the real
federation, and its trajectory is not the real one: measured (Dirichlet alpha = 0.1, 10 clients, seed 0), at
theta_start the simulated and the real honest statistic agree (simulated q98 0.95; a simulated twin given a real
client's label proportions scores within 0.06 of it in the median, 0.23 at most), but over the rounds the simulated
population's statistic calms down (median 0.13 in rounds 1-10, 0.03-0.10 later) while the real fixed federation's
does not (0.18-0.24 in every block of 10 rounds; ``benchmarks/calibration_transfer.py``). A threshold fitted on all simulated rounds pooled then flagged 15.6 % of real honest updates.
So under non-IID the threshold is an *envelope*: the target FPR must hold in every window of ``fpr_window`` (10)
simulated rounds, mu = the largest of the windows' thresholds and tau = 0 (:func:`fit_threshold`). Under IID the
simulated federation has the real one's shape (the same N - f honest clients, K per round) and the pooled fit
with a slope transfers (measured FPR 0.8 % and 2.4 %), so ``fpr_window: null`` (auto) keeps it there; an integer
forces the envelope everywhere. The fit is recomputed from the cached simulated values on every load, so the window
is not part of the cache key.

The flag cap (``strategy.max_flagged``, :func:`max_flagged`). Even the envelope leaves one failure the simulation
cannot see: in a fixed non-IID federation one honest client's statistic can drift upward over the rounds (measured:
grid seed 1, Dirichlet alpha = 0.1, 10 clients: one client's median rose from 0.80 in rounds 1-10 to 1.21 in rounds
41-50, above mu = 0.85; DGC flagged 72 % of its updates, 10.4 % of all honest ones), and one client is 1/(N - f) of
the honest updates. So under non-IID data DGC also flags at most c = min(K, f) updates a round (the most attackers a
round can hold): the round's c largest statistics above P_t. A counterfactual on the recorded cells
(``benchmarks/envelope_window.py --cap``) put that client's cell at 7.4 % and cost recall 0 to 0.06.

Differences from the paper: the paper publishes no DGC and no rule for C; this is our design. What it assumes:
the server's calibration data are clean and distributed like the clients' in law; label skew is simulated,
other heterogeneity (feature shift, unequal sizes) is not.
"""

from __future__ import annotations

import json
import math
import time
from collections import deque
from pathlib import Path

import numpy as np
import torch

from .config import config_hash
from .data import augment, load_dataset, split_of, stream_batch, to_float
from .md import ProbeMD
from .models import get_params, set_params
from .train import local_sgd

FORMAT = 1
STATS_NEEDING_FIT = ("absolute", "increase")


def fit_fpr_threshold(steps, values, target_fpr: float, slope: bool = True) -> tuple[float, float]:
    """(mu, tau) such that at most ``target_fpr`` of ``values`` lie above mu + tau * step.

    tau = least-squares slope of values over steps, clipped at 0 (0 when ``slope`` is false); mu = the smallest
    detrended value d_(n-k) (sorted ascending, 1-based) with k = floor(target_fpr * n) values strictly above it.
    """
    s = np.asarray(steps, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        raise ValueError("no calibration values")
    tau = 0.0
    if slope and len(s) >= 2 and np.ptp(s) > 0:
        tau = max(0.0, float(np.polyfit(s, v, 1)[0]))
    r = np.sort(v - tau * s)
    k = int(np.floor(float(target_fpr) * len(r) + 1e-9))  # this many values may lie above the threshold
    mu = float(r[len(r) - 1 - min(k, len(r) - 1)])
    return mu, tau


def fpr_window(cfg) -> int | None:
    """Rounds per window of the envelope fit, or None for the pooled fit: ``strategy.fpr_window`` when set (0: pooled),
    else 10 under non-IID data (the simulated population is a stand-in) and pooled under IID (see the module doc)."""
    w = cfg.strategy.get("fpr_window")
    if w is not None:
        if int(w) < 0:
            raise ValueError(f"strategy.fpr_window must be >= 0 rounds (0: pooled), got {w}")
        return int(w) or None
    return None if str(cfg.fed.get("partition", "iid")) == "iid" else 10


def max_flagged(cfg) -> int | None:
    """The most updates DGC may flag in one round (``strategy.max_flagged``), or None for no cap.

    Rule (auto, ``null``): under non-IID data c = max(1, min(K, f)), the most attackers a round of K participants can
    hold when at most f = ``fed.num_malicious`` of the N clients are malicious (the bound the calibration already
    assumes: it simulates N - f honest clients); flagging more than c updates of a round flags an honest one for sure,
    so only the c largest statistics above P_t are flagged (:func:`strategies.clipping.capped_flags`). Under IID None
    (the simulated federation has the real one's shape and its fit transfers, as for :func:`fpr_window`). An integer
    forces the cap everywhere, 0 removes it. A cap of K or more is no cap (None).

    Why: the non-IID envelope threshold comes from a simulated stand-in population, and a fixed real federation
    drifts where the simulation does not: measured (grid seed 1, Dirichlet alpha = 0.1, 10 clients, clean stream) one
    honest client's statistic rose from 0.80 (rounds 1-10, median) to 1.21 (rounds 41-50) above mu = 0.85 and DGC
    flagged 72 % of its updates, 10.4 % of all honest ones. One client is 1/(N - f) of the honest updates, so with
    N = 10 a single such client breaks a 10 % FPR bound whatever alpha is; the cap bounds the flagged share of a
    round by c / K on any machine (``benchmarks/envelope_window.py --cap`` prints the counterfactual)."""
    from .sampling import clients_per_round

    s, fed = cfg.strategy, cfg.fed
    k = clients_per_round(cfg)
    c = s.get("max_flagged")
    if c is None:
        if str(fed.get("partition", "iid")) == "iid":
            return None
        c = max(1, min(k, int(fed.num_malicious)))
    elif int(c) < 0:
        raise ValueError(f"strategy.max_flagged must be >= 0 updates a round (0: no cap), got {c}")
    c = int(c)
    return None if c == 0 or c >= k else c


def fit_threshold(steps, values, target_fpr: float, window: int | None) -> tuple[float, float]:
    """(mu, tau): :func:`fit_fpr_threshold` on all values pooled (``window`` None), or the envelope over windows of
    ``window`` steps: mu = max over windows of the window's own threshold (no slope), tau = 0, so that at most
    ``target_fpr`` of the values of *every* window lie above mu. A window spans at least enough steps to hold
    1 / target_fpr values (else it could leave no value above its threshold and would return its maximum); a trailing
    window shorter than that joins the one before it."""
    if window is None:
        return fit_fpr_threshold(steps, values, target_fpr)
    s = np.asarray(steps, dtype=np.int64)
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        raise ValueError("no calibration values")
    lo, hi = int(s.min()), int(s.max())
    per_step = len(v) / len(np.unique(s))
    window = max(int(window), int(math.ceil(1.0 / (float(target_fpr) * per_step) - 1e-9)))
    starts = list(range(lo, hi + 1, window))
    if len(starts) > 1 and hi + 1 - starts[-1] < window:
        starts.pop()
    bounds = starts[1:] + [hi + 1]
    mus = [fit_fpr_threshold(s[(s >= a) & (s < b)], v[(s >= a) & (s < b)], target_fpr, slope=False)[0]
           for a, b in zip(starts, bounds) if np.any((s >= a) & (s < b))]
    return max(mus), 0.0


def calibration_key(cfg, entry: dict) -> dict:
    s, fed = cfg.strategy, cfg.fed
    return {
        "format": FORMAT, "start": entry["start_sha"], "hist": entry["hist_sha"],
        "split": {"burnin": int(cfg.split.burnin), "probe": int(cfg.split.probe), "calib": int(cfg.split.get("calib") or 0)},
        "protocol": cfg.protocol, "n_honest": n_honest(cfg), "B": int(fed.batch_size), "client_lr": float(fed.client_lr),
        "local_steps": int(fed.local_steps), "server_lr": float(fed.server_lr), "momentum": float(fed.server_momentum),
        "augment": bool(cfg.dataset.augment), "rounds": calib_rounds(cfg),
        "statistic": str(s.get("statistic", "absolute")) if s.name == "dgc" else None,
        "probe_size": int(s.get("probe_size") or cfg.split.probe), "hist_mode": str(s.get("hist", "burnin")),
        "hist_lag": int(s.get("hist_lag") or 0) if s.get("hist") == "lag" else 0,
        "target_fpr": float(s.get("target_fpr") or 0.05), "seed": int(cfg.burnin.seed),
        "clip_norm": None if s.get("clip_norm") is None else float(s.clip_norm), "norm": str(s.get("norm", "l2")),
    } | _federation_key(cfg)


def _federation_key(cfg) -> dict:
    """Key entries of the realistic-federation options, present only when they differ from full IID participation
    (so that the caches of earlier runs stay valid: their simulation is unchanged)."""
    from .sampling import clients_per_round

    fed, out = cfg.fed, {}
    if clients_per_round(cfg) != int(fed.num_clients):
        out["clients_per_round"] = clients_per_round(cfg)
        out["honest_per_round"] = honest_per_round(cfg)
    if str(fed.partition) != "iid":
        out["partition"] = str(fed.partition)
        out["skew"] = float(fed.dirichlet_alpha) if fed.partition == "dirichlet" else int(fed.get("classes_per_client") or 2)
        out["law"] = "partitioner-v2"  # label proportions and sizes from the real partitioner, many clients
        out["population"] = simulated_population(cfg)
        out["min_partition_size"] = fed.get("min_partition_size")
        out["attacker_data"] = str(fed.get("attacker_data", "partition"))
    return out


def n_honest(cfg) -> int:
    return max(1, int(cfg.fed.num_clients) - int(cfg.fed.num_malicious))


def calib_rounds(cfg) -> int:
    """R_c = min(``strategy.calib_rounds``, ceil(``strategy.calib_updates`` / K_h)): the simulation's cost is capped
    at about ``calib_updates`` simulated honest updates (400: 100 rounds of the 4 honest clients of the default
    5-client federation, 45 rounds of 9 honest participants), never fewer than 20 rounds."""
    s = cfg.strategy
    R = int(s.get("calib_rounds") or 50)
    cap = s.get("calib_updates")
    if cap is None:
        return R
    return max(min(R, 20), min(R, int(math.ceil(int(cap) / honest_per_round(cfg)))))


def honest_per_round(cfg) -> int:
    """K_h: the honest participants of a round, K minus the attackers expected among K."""
    from .sampling import clients_per_round

    n, k, f = int(cfg.fed.num_clients), clients_per_round(cfg), int(cfg.fed.num_malicious)
    if k == n:
        return n_honest(cfg)
    return max(1, min(n_honest(cfg), k - int(round(k * f / n))))


def simulated_population(cfg) -> int:
    """How many distinct honest clients the simulation draws from: the real N - f, but at least
    ``strategy.calib_population`` (100) under non-IID data, because there the honest statistic varies mostly *between*
    clients (measured: with Dirichlet alpha = 0.1 and 10 clients, three honest clients held their whole distribution
    above a threshold fitted on 9 simulated clients, and DGC flagged 19 % of honest updates)."""
    nh = n_honest(cfg)
    if str(cfg.fed.partition) == "iid":
        return nh
    return max(nh, int(cfg.strategy.get("calib_population") or 100))


def label_skew(cfg, n_clients: int, seed: int, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray] | None:
    """(label proportions, partition sizes) of ``n_clients`` simulated honest clients for ``fed.partition``; None
    for IID.

    The law is the real one: the same flwr-datasets partitioner with the same N, alpha (or classes per client) and
    minimum size, run on a stand-in pool of the real pool's size with balanced labels (the server knows the label
    marginals, not the clients' data), redrawn with new seeds until ``n_clients`` honest partitions (ids 0..N-f-1 of
    each draw) are collected."""
    if str(cfg.fed.partition) == "iid":
        return None
    from .experiment import min_partition_size
    from .data import partition_pool

    n, f = int(cfg.fed.num_clients), int(cfg.fed.num_malicious)
    pool_size = 50_000 - int(cfg.split.burnin)
    if cfg.fed.get("attacker_data", "partition") == "pool" and f > 0:
        pool_size -= 600
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


class _Sim:
    """The simulated clean federation (server side, no Flower): honest updates from the calibration set."""

    def __init__(self, cfg, entry, device="cpu", data=None, probe=None) -> None:
        from .burnin import load_model

        ds = load_dataset(cfg.dataset.name, cfg.data_root)
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
        size = int(cfg.strategy.get("probe_size") or cfg.split.probe)
        probe_x = to_float(ds.x_train[split.probe[:size] if probe is None else np.asarray(probe)]).to(device)
        self.probe = ProbeMD(load_model(cfg, entry["start"], entry["start_sha"], device), probe_x, self.hist)
        self.seed = int(cfg.burnin.seed)
        self.B = int(cfg.fed.batch_size)
        self.population = simulated_population(cfg)
        law = label_skew(cfg, self.population, self.seed)
        self.skew, self.sizes = (None, None) if law is None else law
        labels = ds.y_train[self.data]
        self.by_class = [self.data[labels == c] for c in range(10)]
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
            return stream_batch(self.data, self.B, self.seed, 50_000 + k, rnd - 1)
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


def _norm(u, kind: str = "l2") -> float:
    if kind == "linf":
        return max(float(np.max(np.abs(a))) for a in u)
    return float(np.sqrt(sum(float(np.vdot(a, a)) for a in u)))


def simulate(cfg, entry, log=print, device="cpu", data=None, probe=None) -> dict:
    """Run the simulated clean federation; return the per-update records and C. ``data`` / ``probe``: image indices
    replacing the server's calibration and probe sets (the DGC-aware attacker runs the rule on its own images)."""
    from .sampling import sample_round

    sim = _Sim(cfg, entry, device, data=data, probe=probe)
    nh, kh = n_honest(cfg), honest_per_round(cfg)
    R = calib_rounds(cfg)
    lr, mom, eta = float(cfg.fed.server_lr), float(cfg.fed.server_momentum), float(cfg.fed.server_lr)
    stat = str(cfg.strategy.get("statistic", "absolute")) if cfg.strategy.name == "dgc" else None
    lag = int(cfg.strategy.hist_lag) if cfg.strategy.get("hist") == "lag" else 0
    kind = str(cfg.strategy.get("norm", "l2"))
    t0 = time.time()

    def trajectory(rounds: int, clip_norm: float | None, measure: bool):
        theta = [a.copy() for a in sim.start]
        v = None
        history: deque = deque(maxlen=lag + 1 if lag else 1)
        recs = []
        for rnd in range(1, rounds + 1):
            pop = sim.population
            who = range(nh) if kh == nh == pop else sample_round(sim.seed + 7, rnd, pop, kh)
            ups = [sim.update(theta, rnd, k) for k in who]
            norms = [_norm(u, kind) for u in ups]
            facs = [1.0 if clip_norm is None or n <= clip_norm else clip_norm / n for n in norms]
            if measure:
                if lag:
                    history.append([a.copy() for a in theta])
                    sim.probe.set_hist(history[0])
                cands = [[(t + eta * f * u).astype(t.dtype) for t, u in zip(theta, up)] for up, f in zip(ups, facs)]
                mds = sim.probe(cands + [theta])
                base = mds.pop()
                for k, n, md in zip(who, norms, mds):
                    recs.append({"round": rnd, "client": k, "norm": n, "md": md, "md_base": base})
            else:
                recs.extend({"round": rnd, "client": k, "norm": n} for k, n in zip(who, norms))
            d = [-sum(f * u[i] for f, u in zip(facs, ups)) / len(ups) for i in range(len(theta))]  # theta - mean(theta_k)
            v = d if v is None or mom == 0 else [mom * a + b for a, b in zip(v, d)]
            theta = [(t - lr * g).astype(t.dtype) for t, g in zip(theta, v)]
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


def statistic_values(recs: list[dict], statistic: str) -> tuple[list[int], list[float]]:
    """(steps t = round - 1, s) of the simulated honest updates for ``statistic``."""
    from collections import defaultdict

    if statistic == "absolute":
        return [r["round"] - 1 for r in recs], [r["md"] for r in recs]
    if statistic == "increase":
        return [r["round"] - 1 for r in recs], [r["md"] - r["md_base"] for r in recs]
    if statistic == "cohort":
        by = defaultdict(list)
        for r in recs:
            by[r["round"]].append(r["md"])
        steps, vals = [], []
        for rnd in sorted(by):
            a = np.asarray(by[rnd])
            med = float(np.median(a))
            mad = 1.4826 * float(np.median(np.abs(a - med)))
            steps += [rnd - 1] * len(a)
            vals += [0.0 if mad <= 0 else float((m - med) / mad) for m in a]
        return steps, vals
    raise ValueError(f"unknown statistic {statistic!r}")


def calibrate(cfg, entry: dict, log=print, device="cpu") -> dict:
    """C and (for DGC) the threshold for ``cfg`` (cached beside the burn-in). Returns the fit (no records)."""
    key = calibration_key(cfg, entry)
    path = Path(entry["dir"]) / f"calibration-{config_hash(key)}.json"
    if path.is_file():
        try:
            fit = json.loads(path.read_text())
            if fit.get("key") == key:
                log(f"calibration cache hit: {path}")
                return _fit_threshold(fit, cfg)
        except ValueError:
            pass
    log(f"calibrating on a simulated clean federation ({key['n_honest']} honest clients, {key['rounds']} rounds)")
    sim = simulate(cfg, entry, log=log, device=device)
    recs = sim.pop("records")
    fit = {"key": key, **sim, "path": str(path)}
    if key["statistic"] is not None:
        stat = key["statistic"]
        steps, vals = statistic_values(recs, stat)
        fit.update({"statistic": stat, "target_fpr": key["target_fpr"],
                    "values": {"steps": steps, "stat": [round(v, 8) for v in vals],
                               "norm": [round(r["norm"], 6) for r in recs]}})
        fit = _fit_threshold(fit, cfg, vals)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(fit, indent=1))
    tmp.rename(path)
    msg = f"calibrated: C = {fit['clip_norm']:.4g}"
    if "mu" in fit:
        msg += f", DGC ({fit['statistic']}) P_t = {fit['mu']:.5g} + {fit['tau']:.3g} * t (in-sample FPR " \
               f"{fit['fpr_in_sample']:.3f}, target {fit['target_fpr']}" + \
               (f" in every {fit['fpr_window']}-round window)" if fit.get("fpr_window") else ")")
    log(msg + f" [{fit['seconds']}s]")
    return fit


def _fit_threshold(fit: dict, cfg, vals: list | None = None) -> dict:
    """Set mu, tau, the window and the in-sample FPR of ``fit`` from its simulated values (``vals``, else the cached
    rounded ones). Cheap, so a cached simulation serves every window: a cached fit made with the requested window is
    kept as is (files written before the window existed were pooled fits), any other is refitted."""
    stat = fit.get("statistic")
    if stat is None or "values" not in fit:
        return fit
    window = None if stat == "cohort" else fpr_window(cfg)
    if vals is None and "mu" in fit and fit.get("fpr_window") == window:
        return fit
    steps = fit["values"]["steps"]
    vals = fit["values"]["stat"] if vals is None else vals
    if stat == "cohort":
        mu, tau = float(cfg.strategy.get("cohort_z") or 3.0), 0.0
    else:
        mu, tau = fit_threshold(steps, vals, fit["target_fpr"], window)
    thr = mu + tau * np.asarray(steps, dtype=np.float64)
    return fit | {"mu": mu, "tau": tau, "fpr_window": window, "fpr_in_sample": float(np.mean(np.asarray(vals) > thr))}


def apply_calibration(cfg, entry: dict, log=print, device="cpu") -> dict | None:
    """Fill the strategy's null C / mu / tau from :func:`calibrate`; explicit values stay unchanged.

    Returns the fit (or None when nothing had to be calibrated)."""
    s = cfg.strategy
    norm_based = s.name == "byzfl" and (s.get("aggregator") == "cc" or "clipping" in list(s.get("pre") or []))
    if s.name not in ("gc", "dgc") and not norm_based:  # ByzFL's cc radius / clipping bound: C, as GC's
        return None
    need_c = s.get("clip_norm") is None
    need_p = s.name == "dgc" and (s.get("mu") is None or s.get("tau") is None)
    if not (need_c or need_p):
        return None
    fit = calibrate(cfg, entry, log=log, device=device)
    if need_c:
        s.clip_norm = float(fit["clip_norm"])
    if need_p:
        s.mu, s.tau = float(fit["mu"]), float(fit["tau"])
    return fit
