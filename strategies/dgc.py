"""DGC: Discrepancy-aware Gradient Clipping (our design; Zhu et al., ICML 2023, appendix C.10, Table 13).

The paper names DGC but publishes no code or equations for it; neither official repository implements it. This is
the rule of DESIGN.md section 5, with a choice of *gate* (which updates are flagged). For each client update
Delta_k at round t:

1. GC first: f_k = min(1, C / ||Delta_k||_2) (C: the calibrated median honest update norm, :mod:`fl_mdisc.calibration`).
2. Discrepancy of the GC-clipped candidate model against a stored *global historical model* theta_hist::

       MD_k = mean_{x in probe} KL( softmax f(x; theta_hist) || softmax f(x; theta_t + eta f_k Delta_k) )

   on a small server-held clean probe set (FLTrust-style root data, disjoint from the test set); eta is the server
   learning rate (``step_scale``): the candidate is the model the server would reach if this update alone were the
   aggregate (without momentum).
3. The statistic (``statistic``, :func:`strategies.clipping.dgc_statistic`): ``increase`` (default)
   s_k = MD_k - MD(theta_t), what the update adds (it does not carry theta_t's own drift away from theta_hist);
   ``absolute`` s_k = MD_k. With ``md_source=client`` the statistic is the mean MD a client reports for its own
   incoming samples (the stream-injection placement).
4. The gate (``gate``) flags updates and gives each flagged one a shrink ratio r in [0, 1]:

   * ``history`` (default, :class:`fl_mdisc.history.HistoryGate`): a per-client score from the client's own past
     participations, judged against the federation's own recent statistics; no f, no fitted threshold.
   * ``paper``: s_k > P_t = mu + tau * t with mu, tau fitted on a simulated clean federation for a target
     false-positive rate (:mod:`fl_mdisc.calibration`), as in the Table 13 reproduction; r = P_t / s_k.

5. An update that is not flagged keeps GC's factor f_k (bit-identical to GC). A flagged one is clipped with the
   shrunken bound C_k = C r (``mode="clip"``), or its GC-clipped update is scaled by r whatever its norm
   (``mode="scale"``) (:func:`strategies.clipping.flagged_factor`).

theta_hist is the burn-in historical checkpoint (``hist=burnin``, as DSC's epoch-20 model) or the global model
``hist_lag`` rounds ago (``hist=lag``). Every round logs MD_k, s_k, the gate's score and reference, C_k and the flag
of each client; the gate's memory and the lagged models are checkpointed (:meth:`state`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from logging import INFO

from flwr.common import log
from flwr.serverapp.strategy import Strategy

from .clipping import DGC_MODES, STATISTICS, apply_factor, dgc_statistic, flagged_factor, shrink
from .gc import GradientClipping


class PaperGate:
    """The paper rule: flagged when s_k > P_t = mu + tau * t, t = round - 1; shrink ratio P_t / s_k."""

    name = "paper"

    def __init__(self, mu: float, tau: float) -> None:
        self.mu, self.tau = float(mu), float(tau)

    def describe(self) -> str:
        return f"P_t = {self.mu} + {self.tau} * t"

    def __call__(self, server_round: int, pids: list[int], stats: list[float]) -> list[tuple[bool, float, dict]]:
        P = self.mu + self.tau * (server_round - 1)
        return [(s > P, shrink(s, P), {"P": P}) for s in stats]

    def state(self) -> None:
        return None

    def load_state(self, state) -> None:
        pass


class DiscrepancyAwareClipping(GradientClipping):
    """GC whose bound shrinks for the updates its gate flags on Memorization Discrepancy.

    Parameters
    ----------
    strategy : Strategy
        The aggregation rule (FedAvg in the grid).
    clip_norm : float
        GC's bound C.
    gate : callable
        ``gate(round, partition ids, statistics) -> [(flagged, shrink ratio r in [0, 1], log entries)]`` with
        ``state()`` and ``load_state()``: :class:`PaperGate` (r = P_t / s_k) or :class:`fl_mdisc.history.HistoryGate`.
    probe_md : callable
        Candidate models -> their MD on the server's probe set (``md_source='server'``).
    """

    def __init__(self, strategy: Strategy, clip_norm: float, gate, probe_md: Callable[[list], list[float]] | None = None,
                 set_hist: Callable[[list], None] | None = None, md_source: str = "server",
                 hist_lag: int | None = None, step_scale: float = 1.0, mode: str = "clip",
                 statistic: str = "increase", norm: str = "l2") -> None:
        super().__init__(strategy, clip_norm, norm)
        if mode not in DGC_MODES:
            raise ValueError(f"unknown DGC mode {mode!r}; choose one of {DGC_MODES}")
        if statistic not in STATISTICS:
            raise ValueError(f"unknown DGC statistic {statistic!r}; choose one of {STATISTICS}")
        if statistic != "absolute" and md_source != "server":
            raise ValueError("statistic 'increase' needs md_source='server'")
        if md_source == "server" and probe_md is None:
            raise ValueError("md_source='server' needs a probe_md callable")
        self.gate, self.mode, self.statistic = gate, mode, statistic
        self.probe_md, self.set_hist, self.md_source = probe_md, set_hist, md_source
        self.hist_lag = hist_lag
        self.step_scale = float(step_scale)
        self.history: deque = deque(maxlen=(hist_lag + 1) if hist_lag else 1)

    def summary(self) -> None:
        log(INFO, "\t├── DGC (%s gate: %s; %s, %s statistic): C=%s, MD from %s", self.gate.name, self.gate.describe(),
            self.mode, self.statistic, self.clip_norm, self.md_source)
        super().summary()

    def state(self) -> dict:
        return {"lagged": list(self.history) if self.hist_lag else None, "gate": self.gate.state()}

    def load_state(self, state: dict) -> None:
        if state.get("lagged"):
            self.history.extend(state["lagged"])
        if state.get("gate") is not None:
            self.gate.load_state(state["gate"])

    def configure_train(self, server_round, arrays, config, grid):
        msgs = super().configure_train(server_round, arrays, config, grid)
        if self.hist_lag and self.set_hist is not None:
            self.history.append(self.current_arrays)
            self.set_hist(self.history[0])  # the global model hist_lag rounds ago (oldest kept)
        return msgs

    def statistics(self, items, gc) -> tuple[list[float], list[float], float | None]:
        """(MD_k, s_k, MD(theta_t) or None) of the round's GC-clipped candidates."""
        base = None
        if self.md_source == "server":
            cands = [apply_factor(self.current_arrays, upd, self.step_scale * fac)
                     for (_p, upd, _m), (fac, _e) in zip(items, gc)]
            if self.statistic == "increase" and cands:
                cands.append([a.copy() for a in self.current_arrays])
            mds = self.probe_md(cands) if cands else []
            if self.statistic == "increase" and mds:
                base = mds.pop()
        else:
            mds = [float(m.get("md-client", 0.0)) for (_p, _u, m) in items]
        return mds, dgc_statistic(mds, base, self.statistic), base

    def clip_factors(self, server_round, items):
        gc = super().clip_factors(server_round, items)
        mds, stats, base = self.statistics(items, gc)
        verdicts = self.gate(server_round, [int(p) for p, _u, _m in items], stats)
        out = []
        for (fac, entry), md, st, (flag, ratio, extra) in zip(gc, mds, stats, verdicts):
            new_fac = flagged_factor(entry["norm"], self.clip_norm, ratio, fac, self.mode) if flag else fac
            entry.update({"md": float(md), "stat": float(st), "factor": new_fac, "flagged": bool(flag),
                          "bound": (self.clip_norm if self.mode == "clip" else min(self.clip_norm, entry["norm"]))
                          * (ratio if flag else 1.0), **extra})
            if base is not None:
                entry["md_base"] = float(base)
            out.append((new_fac, entry))
        return out
