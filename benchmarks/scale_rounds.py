"""Round time of large federations with partial participation, and run-to-run identity.

    .venv/bin/python benchmarks/scale_rounds.py OUT_DIR [ROUNDS] [--runs n10,n10_again] [extra overrides...]

Runs through `fl-mdisc run` (Flower simulation on Ray, CPU preset, lambda-update attackers, ST so that no
calibration time is mixed in):

* ``n10``: 10 clients, all every round, 1 attacker (IID), the reference;
* ``n100``: 100 clients, 10 per round, 10 attackers, Dirichlet alpha 0.5 (the issue's large setting), twice,
  to check that metrics.jsonl is bit-identical;
* ``n1000``: 1,000 clients, 10 per round, 100 attackers: starts and finishes a few rounds; its cost is reported;
* ``n10`` once more, so that the second n100 and n10 runs form a back-to-back pair.

``--runs`` keeps a subset of these runs, in the same order (tests/test_benchmarks.py runs ``n10,n10_again`` at toy
size). Writes ``scale.json`` and ``scale.md`` to OUT_DIR: per run the wall time, the median steady round time
(rounds 2..R, from timing.jsonl), start-up (wall - sum of rounds), and whether each setting's two runs (n100 and
n100_again, n10 and n10_again) agree bit for bit.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

# name: overrides of the setting (after the common ones: num_rounds, eval_every, the command line's extras)
SETTINGS = {
    "n10": ["fed.num_clients=10", "fed.attacker_data=pool"],
    "n100": ["fed.num_clients=100", "fed.clients_per_round=10", "fed.num_malicious=10", "fed.attacker_data=pool",
             "fed.partition=dirichlet", "fed.dirichlet_alpha=0.5"],
    "n1000": ["fed.num_clients=1000", "fed.clients_per_round=10", "fed.num_malicious=100", "fed.attacker_data=pool",
              "num_rounds=5", "fed.round_timeout=1200"],  # 9 images per client: a batch is its partition
}
FIXED = ["strategy=st", "attack=lambda_update"]  # every run's, before the common overrides


def runs(R: int, extra: list[str]) -> list[tuple[str, str, list[str]]]:
    """(result key, run folder, overrides after ``FIXED``) of every run, in the order they run: n10, n100 twice,
    n1000, then n10 once more, so that the second n100 and n10 runs form a back-to-back pair (for machines whose
    load changes)."""
    common = [f"num_rounds={R}", "eval_every=10", *extra]
    order = [("n10", "n10"), ("n100", "n100"), ("n100_again", "n100-again"), ("n1000", "n1000"),
             ("n10_again", "n10-again")]
    return [(key, folder, common + SETTINGS[key.removesuffix("_again")]) for key, folder in order]


RUNS = [key for key, _folder, _over in runs(1, [])]


def run(out: Path, overrides: list[str]) -> dict:
    cmd = [str(Path(sys.executable).parent / "fl-mdisc"), "run", "--quiet", f"out_dir={out}", *FIXED, *overrides]
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - t0
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    timing = [json.loads(x) for x in (out / "timing.jsonl").read_text().splitlines()]
    secs = [t["seconds"] for t in timing]
    metrics = (out / "metrics.jsonl").read_bytes()
    return {"overrides": overrides, "wall_s": round(wall, 1), "rounds": len(secs),
            "median_round_s": round(float(np.median(secs[1:])), 3), "first_round_s": secs[0],
            "sum_rounds_s": round(sum(secs), 1), "startup_and_evals_s": round(wall - sum(secs), 1),
            "metrics_sha256": hashlib.sha256(metrics).hexdigest()}


def parse(argv: list[str]) -> tuple[Path, int, list[str], list[str]]:
    """(out folder, rounds, runs kept, extra overrides) from the command line; an unknown run is one clear error."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("rounds", type=int, nargs="?", default=20)
    ap.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated subset of {','.join(RUNS)}")
    args, extra = ap.parse_known_args(argv)
    keep = args.runs.split(",")
    if set(keep) - set(RUNS):
        ap.error(f"--runs takes names among {','.join(RUNS)}, got {args.runs!r}")
    return args.out.resolve(), args.rounds, keep, extra


def table(res: dict) -> list[str]:
    """scale.md's lines: one row per run, then the bit-identity of each repeated setting and the time ratios."""
    lines = ["| run | rounds | median round (s) | first round (s) | start-up + evals (s) | wall (s) |",
             "|---|---|---|---|---|---|"]
    for k, v in res.items():
        if isinstance(v, dict):
            lines.append(f"| {k} | {v['rounds']} | {v['median_round_s']} | {v['first_round_s']} | "
                         f"{v['startup_and_evals_s']} | {v['wall_s']} |")
    notes = [f"{k.removesuffix('_identical')} metrics.jsonl bit-identical over two runs: {v}"
             for k, v in res.items() if k.endswith("_identical")]
    pairs = [f"{res[k]} ({name} pair)" for k, name in (("n100_over_n10", "first"), ("n100_again_over_n10_again", "second"))
             if k in res]
    if pairs:
        notes.append("n100 / n10 median round time: " + ", ".join(pairs))
    return lines + ["", "; ".join(notes)] if notes else lines


def main(argv: list[str] | None = None) -> dict:
    out, R, keep, extra = parse(sys.argv[1:] if argv is None else argv)
    out.mkdir(parents=True, exist_ok=True)
    res = {}
    for key, folder, over in runs(R, extra):
        if key in keep:
            res[key] = run(out / folder, over)
            print(key, json.dumps(res[key]), flush=True)
    for key in ("n100", "n10"):
        if key in res and f"{key}_again" in res:
            res[f"{key}_identical"] = res[key]["metrics_sha256"] == res[f"{key}_again"]["metrics_sha256"]
    for a, b in (("n100", "n10"), ("n100_again", "n10_again")):
        if a in res and b in res:
            res[f"{a}_over_{b}"] = round(res[a]["median_round_s"] / res[b]["median_round_s"], 3)
    (out / "scale.json").write_text(json.dumps(res, indent=1))
    lines = table(res)
    (out / "scale.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return res


if __name__ == "__main__":
    main()
