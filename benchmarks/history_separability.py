"""How far apart the history DGC's scores put attackers and honest clients, read from finished grid cells.

    .venv/bin/python benchmarks/history_separability.py GRID_DIR [--markdown OUT.md]

A post-hoc bound, not a rule: for every poisoned ``*-dgc-s*`` cell under ``GRID_DIR/cells`` (accumulation rounds,
the attackers' poisoning updates against every honest update), and for each of DGC's per-update scores (``z``: this
round's robust z of the statistic; ``score``: the gate's per-client history score h), it reports

* the AUROC of the score (attacker updates vs honest updates);
* the best recall any single cut on that score reaches while flagging at most 2 % of the honest updates of the same
  cell and keeping precision at least 0.9 (the issue's targets) -- the cut is chosen here *after* seeing which update
  is whose, so no gate can do better with that score alone;
* that cut, beside the gate's fixed cut (``strategy.kappa``, read from the cell's config).

If even this bound misses the targets in a setting, the statistic (not the threshold) is what falls short there.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

from _report import emit, folder_args


def scores(cell: Path, key: str) -> tuple[np.ndarray, np.ndarray]:
    att, hon = [], []
    for line in (cell / "rounds.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r.get("phase") != "accumulate":
            continue
        for c in r["clients"]:
            if key not in c or c.get("attack-paused"):
                continue
            (att if c.get("malicious") else hon).append(float(c[key]))
    return np.asarray(att), np.asarray(hon)


def auroc(att: np.ndarray, hon: np.ndarray) -> float:
    """P(attacker score > honest score) + half the ties (Mann-Whitney).

    >>> auroc(np.array([3.0, 4.0]), np.array([1.0, 3.0]))
    0.875
    """
    a, h = att[:, None], hon[None, :]
    return float(((a > h).sum() + 0.5 * (a == h).sum()) / (len(att) * len(hon)))


def best_cut(att: np.ndarray, hon: np.ndarray, max_fpr: float = 0.02, min_precision: float = 0.9) -> tuple[float, float]:
    """(recall, cut) of the cut with the highest recall among those with honest FPR <= max_fpr and precision >=
    min_precision (flagged = score > cut); (0, inf) when none qualifies.

    >>> best_cut(np.array([5.0, 6.0, 1.0]), np.array([0.0, 1.0, 2.0] * 40))
    (0.6666666666666666, 2.0)
    """
    best = (0.0, float("inf"))
    for cut in np.unique(np.concatenate([att, hon])):
        tp, fp = int((att > cut).sum()), int((hon > cut).sum())
        if tp and fp <= max_fpr * len(hon) and tp / (tp + fp) >= min_precision and tp / len(att) > best[0]:
            best = (tp / len(att), float(cut))
    return best


def cell_row(cell: Path) -> dict:
    cfg = yaml.safe_load((cell / "config.yaml").read_text())
    row = {"cell": cell.name, "kappa": cfg["strategy"].get("kappa")}
    for key in ("z", "score"):
        att, hon = scores(cell, key)
        row[key] = (auroc(att, hon), *best_cut(att, hon)) if len(att) and len(hon) else None
    return row


def main() -> None:
    a = folder_args(__doc__, "grid")
    rows = [cell_row(c) for c in sorted(Path(a.grid, "cells").glob("*-poisoned-dgc-s*")) if (c / "summary.json").is_file()]

    def f(v):
        return "–" if v is None else "none" if v == float("inf") else f"{v:.2f}"

    lines = [f"Separability of the history DGC's scores in {a.grid} (poisoned cells, accumulation rounds; post hoc: the "
             "cut is chosen knowing who is whom, so it bounds every gate on that score)", "",
             "| cell | AUROC of z (this round) | best recall of z at FPR <= 2 %, precision >= 0.9 (cut) | AUROC of h "
             "(history) | best recall of h (cut) | the gate's cut on h |", "|---|---|---|---|---|---|"]
    for r in rows:
        z, h = r["z"] or (None,) * 3, r["score"] or (None,) * 3
        lines.append(f"| {r['cell']} | {f(z[0])} | {f(z[1])} ({f(z[2])}) | {f(h[0])} | {f(h[1])} ({f(h[2])}) | "
                     f"{f(r['kappa'])} |")
    emit(lines, a.markdown)


if __name__ == "__main__":
    main()
