"""How the history gate's rule was chosen: the pre-registered candidates replayed on recorded statistics of the design
seeds (burn-in seeds 100 and 101, never reported as results), without running a cell.

    .venv/bin/python benchmarks/history_gate_design.py docs/results/design-obs [--markdown OUT.md]

The cells (docs/results/design-obs/README.md) log the DGC statistic of every update with nothing flagged (the GC
trajectory): ``fl-mdisc grid preset=cpu seeds=[100,101] strategies=[dgc_paper] strategy.mu=1e9 strategy.tau=0``. Each
candidate is a (scale, score, gate) triple, registered before any design statistic was looked at:

* scale: ``pooled`` (the round's median removed, 1.4826 x the median absolute centred value over the last 10 rounds)
  or ``round`` (the same within the round alone);
* score: ``now`` (this round's z only), ``mean`` (mean over the client's last 5 participations), ``ewma`` (z weighted
  0.5 / 0.5 with the client's previous score);
* gate: ``kappa`` (score > 3.5), ``gap`` (FLDetector's gap statistic + 2-means over the round's scores), ``both``.

Printed per candidate: the largest honest FPR over the design cells, the mean, the smallest recall (over the attackers'
poisoning updates) and the mean, and the same per setting. The chosen rule is replayed through
:class:`fl_mdisc.history.HistoryGate` itself as a check that the replay is the gate's code path.
"""
from __future__ import annotations

import json
import sys
from collections import defaultdict, deque
from pathlib import Path

import numpy as np

from _report import emit, folder_args

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fl_mdisc.gate import outlying  # noqa: E402
from fl_mdisc.history import HistoryGate  # noqa: E402

SCALES, SCORES, GATES = ("pooled", "round"), ("now", "mean", "ewma"), ("kappa", "gap", "both")
KAPPA, WINDOW, POOL, ALPHA = 3.5, 5, 10, 0.5


def load(cell: Path) -> list[list[tuple]]:
    """Accumulation rounds: [(partition id, statistic, malicious, paused)]."""
    out = []
    for line in (cell / "rounds.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["phase"] == "accumulate":
            out.append([(c["partition-id"], c["stat"], bool(c.get("malicious")), bool(c.get("attack-paused")))
                        for c in r["clients"] if "stat" in c])
    return out


def replay(rounds, scale: str, score: str, gate: str, seed: int = 0) -> list[list[tuple]]:
    pool: deque = deque(maxlen=POOL)
    win: dict = defaultdict(lambda: deque(maxlen=WINDOW))
    ew: dict = {}
    out = []
    for t, r in enumerate(rounds, 1):
        s = np.array([x[1] for x in r])
        c = s - np.median(s)
        pool.append(c)
        ref = np.concatenate(list(pool)) if scale == "pooled" else c
        sigma = 1.4826 * float(np.median(np.abs(ref)))
        z = c / sigma if sigma > 0 else np.zeros_like(c)
        sc = []
        for (pid, *_), zk in zip(r, z):
            win[pid].append(float(zk))
            ew[pid] = float(zk) if pid not in ew else ALPHA * float(zk) + (1 - ALPHA) * ew[pid]
            sc.append({"now": float(zk), "mean": float(np.mean(win[pid])), "ewma": ew[pid]}[score])
        sc = np.array(sc)
        flags = {"kappa": lambda: sc > KAPPA, "gap": lambda: outlying(sc, np.random.default_rng([seed, t])),
                 "both": lambda: (sc > KAPPA) & outlying(sc, np.random.default_rng([seed, t]))}[gate]()
        out.append([(x[0], bool(f), x[2], x[3]) for x, f in zip(r, flags)])
    return out


def rates(flags) -> tuple[float, float | None]:
    hon = [f for r in flags for (_p, f, m, _pa) in r if not m]
    mal = [f for r in flags for (_p, f, m, pa) in r if m and not pa]
    return float(np.mean(hon)) if hon else 0.0, (float(np.mean(mal)) if mal else None)


def gate_flags(rounds) -> list[list[tuple]]:
    """The chosen rule through the product's own class."""
    g = HistoryGate()
    return [[(x[0], f, x[2], x[3]) for x, (f, _r, _e) in zip(r, g(t, [x[0] for x in r], [x[1] for x in r]))]
            for t, r in enumerate(rounds, 1)]


def main() -> None:
    a = folder_args(__doc__, "results")
    cells = sorted(p for p in (Path(a.results) / "cells").iterdir() if (p / "summary.json").is_file())
    data = {p.name: load(p) for p in cells}
    res: dict = {}
    for scale in SCALES:
        for score in SCORES:
            for gate in GATES:
                res[(scale, score, gate)] = {name: rates(replay(r, scale, score, gate)) for name, r in data.items()}
    lines = [f"Replay of {len(cells)} design cells ({a.results}); honest FPR over all cells, recall over the poisoned "
             "ones (the attackers' poisoning updates)", "",
             "| scale | score | gate | max FPR | mean FPR | min recall | mean recall |", "|---|---|---|---|---|---|---|"]
    for (scale, score, gate), by in res.items():
        fpr = [v[0] for v in by.values()]
        rec = [v[1] for v in by.values() if v[1] is not None]
        lines.append(f"| {scale} | {score} | {gate} | {max(fpr):.3f} | {np.mean(fpr):.3f} | "
                     f"{min(rec) if rec else float('nan'):.3f} | {np.mean(rec) if rec else float('nan'):.3f} |")
    chosen = ("pooled", "ewma", "kappa")
    lines += ["", f"Per cell, the rule {chosen} (through fl_mdisc.history.HistoryGate):", "",
              "| cell | honest FPR | recall |", "|---|---|---|"]
    for name, r in data.items():
        f, rc = rates(gate_flags(r))
        assert (f, rc) == res[chosen][name], f"replay and HistoryGate disagree on {name}"
        lines.append(f"| {name} | {f:.3f} | {'–' if rc is None else f'{rc:.3f}'} |")
    emit(lines, a.markdown)


if __name__ == "__main__":
    main()
