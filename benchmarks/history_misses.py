"""Where the history DGC misses, read from finished grid cells (no simulation).

    .venv/bin/python benchmarks/history_misses.py GRID_DIR [--markdown OUT.md]

For every ``*-dgc-s*`` cell under ``GRID_DIR/cells`` (the history gate's ``rounds.jsonl``: per update ``flagged``,
``malicious``, ``attack-paused``, ``z``, ``score``, ``seen``), over the accumulation rounds:

* missed attacker updates (poisoning rounds only), split by the attacker's participation count at the time (first
  sight: no history yet; 2-3; later), with the median z and score of the missed ones;
* flagged honest updates, split by client: how many clients, and the share of the flags the most-flagged client holds
  (one persistently drifting honest client, or flags spread thin);
* how much of a flagged attacker update still reaches the model: the median of C_k / C (its bound over the round's
  unflagged bound C), and the median of (bound-clipped norm) / (the round's median honest norm after clipping);
* the strength of the missed attacker updates: the median of ``attack-norm / attack-ref-norm`` (2 = the preset's full
  push; less = the stealthy attacker holding back after its validation accuracy fell).
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from _report import emit, folder_args


def cell_stats(cell: Path) -> dict:
    missed = {"first": [], "2-3": [], "later": []}
    caught = Counter()
    honest_flags = Counter()
    honest = 0
    shrink, rel, strength = [], [], []
    for line in (cell / "rounds.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r.get("phase") != "accumulate":
            continue
        cs = [c for c in r["clients"] if "flagged" in c]
        free = [c["bound"] for c in cs if not c["flagged"] and c.get("bound")]
        hon = [min(c["norm"], c["bound"]) for c in cs if not c.get("malicious") and c.get("bound") and "norm" in c]
        for c in cs:
            if c.get("malicious") and c["flagged"] and not c.get("attack-paused") and free and c.get("bound"):
                shrink.append(c["bound"] / max(free))
                if hon and "norm" in c:
                    rel.append(min(c["norm"], c["bound"]) / float(np.median(hon)))
        for c in r["clients"]:
            if "flagged" not in c:
                continue
            if c.get("malicious"):
                if c.get("attack-paused"):
                    continue
                seen = int(c.get("seen", 0))
                bucket = "first" if seen <= 1 else "2-3" if seen <= 3 else "later"
                if c["flagged"]:
                    caught[bucket] += 1
                else:
                    missed[bucket].append((c.get("z"), c.get("score")))
                    if c.get("attack-ref-norm"):
                        strength.append(c.get("attack-norm", 0.0) / c["attack-ref-norm"])
            else:
                honest += 1
                if c["flagged"]:
                    honest_flags[c["partition-id"]] += 1
    out = {"cell": cell.name, "honest": honest, "honest_flagged": sum(honest_flags.values()),
           "honest_clients_flagged": len(honest_flags),
           "top_client_share": (max(honest_flags.values()) / sum(honest_flags.values())) if honest_flags else None,
           "flagged_attacker_shrink": float(np.median(shrink)) if shrink else None,
           "flagged_attacker_vs_honest": float(np.median(rel)) if rel else None,
           "missed_strength": float(np.median(strength)) if strength else None}
    for b, xs in missed.items():
        out[f"missed_{b}"] = len(xs)
        out[f"caught_{b}"] = caught[b]
        zs = [z for z, _ in xs if z is not None]
        out[f"missed_{b}_median_z"] = float(np.median(zs)) if zs else None
    return out


def main() -> None:
    a = folder_args(__doc__, "grid")
    rows = [cell_stats(c) for c in sorted(Path(a.grid, "cells").glob("*-dgc-s*")) if (c / "summary.json").is_file()]

    def f(v, d=2):
        return "–" if v is None else f"{v:.{d}f}"

    lines = [f"Misses of the history DGC in {a.grid} (accumulation rounds; attacker updates in poisoning rounds by "
             "the attacker's participation count; honest flags by client)", "",
             "| cell | missed / caught at first sight (median z missed) | at 2nd-3rd | later | honest flagged / "
             "honest | honest clients flagged | share of the most-flagged client | flagged attacker: C_k / C | "
             "flagged attacker's clipped norm / honest median | missed: attack norm / its honest norm |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['cell']} | {r['missed_first']} / {r['caught_first']} ({f(r['missed_first_median_z'])}) | "
                     f"{r['missed_2-3']} / {r['caught_2-3']} ({f(r['missed_2-3_median_z'])}) | "
                     f"{r['missed_later']} / {r['caught_later']} ({f(r['missed_later_median_z'])}) | "
                     f"{r['honest_flagged']} / {r['honest']} | {r['honest_clients_flagged']} | "
                     f"{f(r['top_client_share'])} | {f(r['flagged_attacker_shrink'])} | "
                     f"{f(r['flagged_attacker_vs_honest'])} | {f(r['missed_strength'])} |")
    emit(lines, a.markdown)


if __name__ == "__main__":
    main()
