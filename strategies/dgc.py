"""DGC: Discrepancy-aware Gradient Clipping (our design; Zhu et al., ICML 2023, appendix C.10, Table 13).

The paper names DGC but publishes no code or equations for it; neither official repository implements it.
This is the rule of DESIGN.md section 5. For each client update Delta_k at round t:

1. GC first: f_k = min(1, C / ||Delta_k||_2).
2. Discrepancy of the GC-clipped candidate model against a stored *global historical model* theta_hist::

       MD_k = mean_{x in probe} KL( softmax f(x; theta_hist) || softmax f(x; theta_t + eta f_k Delta_k) )

   where eta is the server learning rate (``step_scale``): the candidate is the model the server would
   reach if this update alone were the aggregate (without momentum). With raw-gradient updates (client lr 1)
   and eta = 0.1, measuring at theta_t + Delta_k instead would judge a step 10x larger than any the server takes.

   on a small server-held clean probe set (FLTrust-style root data, disjoint from the test set), or, with
   ``md_source=client``, the mean MD that the client reports for its own incoming samples (meaningful when
   poisoned samples are injected into an honest client's stream).
3. The statistic s_k that is thresholded (``statistic``, :func:`strategies.clipping.dgc_statistic`):
   ``absolute`` s_k = MD_k (the original rule); ``increase`` s_k = MD_k - MD(theta_t), what the update adds
   (one more probe forward per round; the default, chosen from measurements: see below); ``cohort`` the robust
   z-score of MD_k within the round.
4. Threshold P_t = mu + tau * t. An update is flagged when s_k > P_t and, with a cap c (``max_flagged``: under
   non-IID data c = min(K, f), the most attackers a round can hold), s_k is among the round's c largest
   (:func:`strategies.clipping.capped_flags`). If it is not flagged the GC factor f_k is kept as is (bit-identical to GC);
   otherwise the bound shrinks to C_k = C * P_t / s_k and Delta_k <- Delta_k * min(1, C_k / ||Delta_k||)
   (``mode="clip"``, the default), or the GC-clipped update is scaled by P_t / s_k whatever its norm
   (``mode="scale"``: C_k = min(C, ||Delta_k||) * P_t / s_k, so a flagged update below C is shrunk too).
   C, mu and tau are computed where the run happens (:mod:`fl_mdisc.calibration`: a simulated clean
   federation on the server's own data, mu/tau fitted for a target false-positive rate) unless given.

Why ``increase`` is the default: MD_k of the candidate is mostly the MD of theta_t itself, which depends on
the distance between the two burn-in checkpoints and grows with the rounds (on one burn-in the fitted slope was
4x that of another), so an absolute threshold fitted on a short calibration drifts away from the real run.
The increase caused by one update does not carry theta_t's drift (fitted slope ~0); for honest updates it is
centred near 0, and its fitted upper tail P_t is positive, so P_t / s_k is a valid shrink factor for every flagged
update (s_k > P_t > 0; a threshold <= 0 would drop flagged updates entirely: :func:`strategies.clipping.shrink`). Measurements: README "Calibration" and
``benchmarks/dgc_statistic.py``.

theta_hist is either the burn-in historical checkpoint (``hist=burnin``, as DSC's epoch-20 model) or the
global model ``hist_lag`` rounds ago from a bounded ring buffer (``hist=lag``; theta_start until then).
Every round logs MD_k, P_t, C_k and whether the update was flagged (MD_k > P_t) for each client.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from logging import INFO

from flwr.common import log
from flwr.serverapp.strategy import Strategy

from .clipping import DGC_MODES, STATISTICS, apply_factor, capped_flags, dgc_bound, dgc_factor, dgc_statistic
from .gc import GradientClipping


class DiscrepancyAwareClipping(GradientClipping):
    """GC whose bound shrinks for updates whose Memorization Discrepancy exceeds P_t = mu + tau * t."""

    def __init__(self, strategy: Strategy, clip_norm: float, mu: float, tau: float,
                 probe_md: Callable[[list], list[float]] | None = None,
                 set_hist: Callable[[list], None] | None = None,
                 md_source: str = "server", hist_lag: int | None = None, round_offset: int = 0,
                 step_scale: float = 1.0, mode: str = "clip", statistic: str = "absolute", norm: str = "l2",
                 max_flagged: int | None = None) -> None:
        super().__init__(strategy, clip_norm, norm)
        if mode not in DGC_MODES:
            raise ValueError(f"unknown DGC mode {mode!r}; choose one of {DGC_MODES}")
        if statistic not in STATISTICS:
            raise ValueError(f"unknown DGC statistic {statistic!r}; choose one of {STATISTICS}")
        if statistic != "absolute" and md_source != "server":
            raise ValueError("statistic 'increase'/'cohort' needs md_source='server'")
        if max_flagged is not None and int(max_flagged) < 1:
            raise ValueError(f"max_flagged must be >= 1 (None: no cap), got {max_flagged}")
        self.max_flagged = None if max_flagged is None else int(max_flagged)
        self.mode = mode
        self.statistic = statistic
        if md_source == "server" and probe_md is None:
            raise ValueError("md_source='server' needs a probe_md callable")
        self.mu, self.tau = float(mu), float(tau)
        self.probe_md = probe_md
        self.set_hist = set_hist
        self.md_source = md_source
        self.hist_lag = hist_lag
        self.round_offset = round_offset
        self.step_scale = float(step_scale)
        self.history: deque = deque(maxlen=(hist_lag + 1) if hist_lag else 1)

    def summary(self) -> None:
        log(INFO, "\t├── DGC (%s, %s): C=%s, P_t = %s + %s * t, MD from %s, at most %s flagged a round", self.mode,
            self.statistic, self.clip_norm, self.mu, self.tau, self.md_source, self.max_flagged or "all")
        super().summary()

    def threshold(self, server_round: int) -> float:
        return self.mu + self.tau * (server_round - 1 + self.round_offset)

    def configure_train(self, server_round, arrays, config, grid):
        msgs = super().configure_train(server_round, arrays, config, grid)
        if self.hist_lag and self.set_hist is not None:
            self.history.append(self.current_arrays)
            self.set_hist(self.history[0])  # the global model hist_lag rounds ago (oldest kept)
        return msgs

    def clip_factors(self, server_round, items):
        gc = super().clip_factors(server_round, items)
        P = self.threshold(server_round)
        base = None
        if self.md_source == "server":
            candidates = [apply_factor(self.current_arrays, upd, self.step_scale * fac) for (_p, upd, _m), (fac, _e) in zip(items, gc)]
            if self.statistic == "increase" and candidates:
                candidates.append([a.copy() for a in self.current_arrays])
            mds = self.probe_md(candidates) if candidates else []
            if self.statistic == "increase" and mds:
                base = mds.pop()
        else:
            mds = [float(m.get("md-client", 0.0)) for (_p, _u, m) in items]
        stats = dgc_statistic(mds, base, self.statistic)
        flags = capped_flags(stats, P, self.max_flagged)
        out = []
        for (_p, _u, _m), (fac, entry), md, st, flag in zip(items, gc, mds, stats, flags):
            P_k = P if flag or st <= P else float(st)  # spared by the cap: judged as if at the threshold (GC's factor)
            new_fac = dgc_factor(entry["norm"], self.clip_norm, st, P_k, fac, self.mode)
            entry.update({"md": float(md), "stat": float(st), "P": P, "factor": new_fac, "flagged": bool(flag),
                          "bound": dgc_bound(self.clip_norm, st, P_k, entry["norm"], self.mode)})
            if self.max_flagged is not None:
                entry["spared"] = bool(st > P and not flag)  # above P_t, outside the round's max_flagged largest
            if base is not None:
                entry["md_base"] = float(base)
            out.append((new_fac, entry))
        return out
