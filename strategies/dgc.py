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
3. The statistic s_k = MD_k - MD(theta_t): what the update adds to the discrepancy (one more probe forward per
   round; it does not carry theta_t's own drift away from theta_hist, which grows with the rounds).
4. The gate (``gate``) flags updates and gives each flagged one a shrink ratio r in [0, 1]:

   * ``history`` (default, :class:`fl_mdisc.history.HistoryGate`): a per-client score from the client's own past
     participations, judged against the federation's own recent statistics; no f, no fitted threshold.
   * ``paper``: s_k > P_t = mu + tau * t with mu, tau fitted on a simulated clean federation for a target
     false-positive rate (:mod:`fl_mdisc.calibration`), as in the Table 13 reproduction; r = P_t / s_k.

5. An update that is not flagged keeps GC's factor f_k (bit-identical to GC). A flagged one is clipped with the
   shrunken bound C_k = C r (``mode="clip"``), or its GC-clipped update is scaled by r whatever its norm
   (``mode="scale"``) (:func:`strategies.clipping.flagged_factor`).

theta_hist is the burn-in historical checkpoint (as DSC's epoch-20 model). Every round logs MD_k, s_k, MD(theta_t),
the gate's score and reference, C_k and the flag of each client; the gate's memory is checkpointed (:meth:`state`).
"""

from __future__ import annotations

from collections.abc import Callable
from logging import INFO

from flwr.common import log
from flwr.serverapp.strategy import Strategy

from .clipping import DGC_MODES, apply_factor, flagged_factor, shrink
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
        Candidate models -> their MD on the server's probe set.
    step_scale : float
        eta, the server learning rate: the candidate of an update is theta_t + eta f_k Delta_k.
    mode : str
        ``clip`` (a flagged update's bound is C r) or ``scale`` (its GC-clipped update is scaled by r).
    norm : str
        ``l2`` or ``linf``, GC's norm.
    """

    def __init__(self, strategy: Strategy, clip_norm: float, gate, probe_md: Callable[[list], list[float]],
                 step_scale: float = 1.0, mode: str = "clip", norm: str = "l2") -> None:
        super().__init__(strategy, clip_norm, norm)
        if mode not in DGC_MODES:
            raise ValueError(f"unknown DGC mode {mode!r}; choose one of {DGC_MODES}")
        if probe_md is None:
            raise ValueError("DGC needs a probe_md callable (the MD of candidate models on the server's probe set)")
        self.gate, self.mode, self.probe_md = gate, mode, probe_md
        self.step_scale = float(step_scale)

    def summary(self) -> None:
        log(INFO, "\t├── DGC (%s gate: %s; %s): C=%s", self.gate.name, self.gate.describe(), self.mode,
            self.clip_norm)
        super().summary()

    def state(self) -> dict:
        return {"gate": self.gate.state()}

    def load_state(self, state: dict) -> None:
        if state.get("gate") is not None:
            self.gate.load_state(state["gate"])

    def statistics(self, items, gc) -> tuple[list[float], list[float], float | None]:
        """(MD_k, s_k = MD_k - MD(theta_t), MD(theta_t)) of the round's GC-clipped candidates."""
        if not items:
            return [], [], None
        cands = [apply_factor(self.current_arrays, upd, self.step_scale * fac)
                 for (_p, upd, _m), (fac, _e) in zip(items, gc)]
        mds = [float(m) for m in self.probe_md(cands + [[a.copy() for a in self.current_arrays]])]
        base = mds.pop()
        return mds, [m - base for m in mds], base

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
