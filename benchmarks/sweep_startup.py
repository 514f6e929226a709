"""Start-up per cell of a sweep, and sweep.parallel=2 against sequential (the scale-out issue's measurements).

Runs ``fl-mdisc table13 preset=cpu seeds=[0] num_rounds=10`` twice, sequentially and with ``sweep.parallel=2``, into
OUT/seq and OUT/par, and writes OUT/sweep-startup.{md,json}: per cell its start-up inside the shared run
(``summary.json: startup_s``, the cell's start to its first round, round-0 evaluation included) and wall time; the
sweep's own overhead (sweep wall time minus the cells' wall times: SuperLink, Ray and ServerApp start, teardown);
and whether every cell's metrics.jsonl / rounds.jsonl are byte-identical between the two.

    .venv/bin/python benchmarks/sweep_startup.py OUT            # runs both (about 10 min on 2 idle cores)
    .venv/bin/python benchmarks/sweep_startup.py OUT --analyse SEQ_S PAR_S   # only the report, from OUT/seq, OUT/par
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

CMD = [str(Path(sys.executable).with_name("fl-mdisc")), "table13", "preset=cpu", "seeds=[0]", "num_rounds=10"]


def run(out: Path, extra: list[str]) -> float:
    t = time.time()
    subprocess.run(CMD + extra + [f"out_dir={out}"], check=True)
    return time.time() - t


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def analyse(out: Path, seq_s: float, par_s: float) -> dict:
    rows = []
    # in the order the shared run started them (calibration.json is the first file a cell's ServerApp writes)
    for cell in sorted((out / "seq" / "cells").iterdir(), key=lambda c: (c / "calibration.json").stat().st_mtime):
        other = out / "par" / "cells" / cell.name
        s_seq = json.loads((cell / "summary.json").read_text())
        s_par = json.loads((other / "summary.json").read_text())
        rows.append({"cell": cell.name, "startup_s_seq": s_seq.get("startup_s"), "wall_s_seq": s_seq["wall_s"],
                     "startup_s_par": s_par.get("startup_s"), "wall_s_par": s_par["wall_s"],
                     "identical": all(sha(cell / f) == sha(other / f) for f in ("metrics.jsonl", "rounds.jsonl"))})
    doc = {"command": " ".join(CMD[1:]), "sequential_s": round(seq_s, 1), "parallel2_s": round(par_s, 1),
           "sweep_overhead_seq_s": round(seq_s - sum(r["wall_s_seq"] for r in rows), 1), "cells": rows,
           "all_identical": all(r["identical"] for r in rows)}
    later = [r["startup_s_seq"] for r in rows[1:]]
    lines = [f"# Sweep start-up and sweep.parallel (`{doc['command']}`)", "",
             f"Sequential: {doc['sequential_s']} s for {len(rows)} cells in one shared SuperLink + Ray run; "
             f"sweep.parallel=2: {doc['parallel2_s']} s. Overhead outside the cells (launcher, SuperLink, Ray, "
             f"ServerApp start, teardown), sequential: {doc['sweep_overhead_seq_s']} s, paid once. Start-up inside the "
             f"run per cell after the first: max {max(later):.2f} s, mean {sum(later) / len(later):.2f} s (the first "
             f"cell of a run, {rows[0]['startup_s_seq']} s, also waits for the ClientApp actors to start). Rows in "
             "the order the sequential run started them; with sweep.parallel=2 the first cell of each lane pays the "
             "actors' start.",
             f" Every cell's metrics.jsonl and rounds.jsonl byte-identical between the two: {doc['all_identical']}.", "",
             "| cell | start-up seq (s) | wall seq (s) | start-up par (s) | wall par (s) | identical |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['cell']} | {r['startup_s_seq']} | {r['wall_s_seq']} | {r['startup_s_par']} | {r['wall_s_par']} | "
              f"{r['identical']} |" for r in rows]
    (out / "sweep-startup.md").write_text("\n".join(lines) + "\n")
    (out / "sweep-startup.json").write_text(json.dumps(doc, indent=1))
    print("\n".join(lines))
    return doc


if __name__ == "__main__":
    out = Path(sys.argv[1]).resolve()
    if len(sys.argv) > 2 and sys.argv[2] == "--analyse":
        analyse(out, float(sys.argv[3]), float(sys.argv[4]))
    else:
        seq = run(out / "seq", [])
        par = run(out / "par", ["sweep.parallel=2"])
        analyse(out, seq, par)
