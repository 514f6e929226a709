"""Would another per-update signal separate attackers from honest clients where DGC's statistic does not? Read from
recorded cells, post hoc.

    .venv/bin/python benchmarks/history_signals.py CELLS_DIR [--markdown OUT.md]

For every poisoned cell under ``CELLS_DIR/cells`` whose ``rounds.jsonl`` logs DGC's statistic ``stat`` and the update
norm ``norm`` of every update (the design cells of ``docs/results/design-obs``: burn-in seeds 100 and 101, nothing
flagged), each candidate signal is fed through :class:`fl_mdisc.history.HistoryGate` (the product's history score h:
the round's robust z, pooled over 10 rounds, weighted over the client's own participations), and the script reports

* the AUROC of h (the attackers' poisoning updates against every honest update);
* the best recall any single cut on h reaches at honest FPR <= 2 % and precision >= 0.9 (chosen knowing who is whom,
  so a bound on every gate that reads h of that signal; ``history_separability.py``'s ``best_cut``).

Signals, all of them things a server sees: ``stat`` (DGC's statistic, the MD increase an update causes on the probe
set), ``norm`` (the update's L2 norm before clipping), ``stat x norm``. Where no signal reaches the targets in a cell,
no gate on these signals can.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from _report import emit, folder_args
from history_separability import auroc, best_cut

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fl_mdisc.history import HistoryGate  # noqa: E402

import numpy as np  # noqa: E402

SIGNALS = {"stat": lambda c: c["stat"], "norm": lambda c: c["norm"], "stat x norm": lambda c: c["stat"] * c["norm"]}


def history_scores(cell: Path, signal) -> tuple[np.ndarray, np.ndarray]:
    """h of every poisoning (attacker) update and every honest update of the cell's accumulation rounds."""
    gate, att, hon = HistoryGate(), [], []
    for line in (cell / "rounds.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r.get("phase") != "accumulate":
            continue
        cs = [c for c in r["clients"] if "stat" in c and "norm" in c]
        for c, (_flag, _ratio, extra) in zip(cs, gate(r["round"], [c["partition-id"] for c in cs],
                                                       [signal(c) for c in cs])):
            if not c.get("attack-paused"):
                (att if c.get("malicious") else hon).append(extra["score"])
    return np.asarray(att), np.asarray(hon)


def main() -> None:
    a = folder_args(__doc__, "cells_dir")
    cells = sorted(c for c in Path(a.cells_dir, "cells").glob("*-poisoned-*") if (c / "summary.json").is_file())
    lines = [f"History score h of three server-side signals in {a.cells_dir} (post hoc: AUROC, and the best recall "
             "of any cut at honest FPR <= 2 % and precision >= 0.9)", "",
             "| cell | " + " | ".join(f"{s}: AUROC / best recall" for s in SIGNALS) + " |",
             "|---|" + "---|" * len(SIGNALS)]
    for cell in cells:
        row = []
        for signal in SIGNALS.values():
            att, hon = history_scores(cell, signal)
            row.append(f"{auroc(att, hon):.2f} / {best_cut(att, hon)[0]:.2f}" if len(att) and len(hon) else "–")
        lines.append(f"| {cell.name} | " + " | ".join(row) + " |")
    emit(lines, a.markdown)


if __name__ == "__main__":
    main()
