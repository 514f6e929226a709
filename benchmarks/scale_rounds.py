"""Round time of large federations with partial participation, and run-to-run identity.

    .venv/bin/python benchmarks/scale_rounds.py OUT_DIR [ROUNDS] [extra overrides...]

Runs through `fl-mdisc run` (Flower simulation on Ray, CPU preset, lambda-update attackers, ST so that no
calibration time is mixed in):

* ``n10``: 10 clients, all every round, 1 attacker (IID), the reference;
* ``n100``: 100 clients, 10 per round, 10 attackers, Dirichlet alpha 0.5 (the issue's large setting), twice,
  to check that metrics.jsonl is bit-identical;
* ``n1000``: 1,000 clients, 10 per round, 100 attackers: starts and finishes a few rounds; its cost is reported;
* ``n10`` once more, so that the second n100 and n10 runs form a back-to-back pair.

Writes ``scale.json`` and ``scale.md`` to OUT_DIR: per run the wall time, the median steady round time (rounds
2..R, from timing.jsonl), start-up (wall - sum of rounds), and whether the two n100 runs agree bit for bit.
"""

from __future__ import annotations

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


def main() -> None:
    out = Path(sys.argv[1]).resolve()
    R = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    extra = sys.argv[3:]
    out.mkdir(parents=True, exist_ok=True)
    res = {}
    for key, folder, over in runs(R, extra):
        res[key] = run(out / folder, over)
        print(key, json.dumps(res[key]), flush=True)
    res["n100_identical"] = res["n100"]["metrics_sha256"] == res["n100_again"]["metrics_sha256"]
    res["n100_over_n10"] = round(res["n100"]["median_round_s"] / res["n10"]["median_round_s"], 3)
    res["n100_again_over_n10_again"] = round(res["n100_again"]["median_round_s"] / res["n10_again"]["median_round_s"], 3)
    (out / "scale.json").write_text(json.dumps(res, indent=1))
    lines = ["| run | rounds | median round (s) | first round (s) | start-up + evals (s) | wall (s) |", "|---|---|---|---|---|---|"]
    for k, v in res.items():
        if isinstance(v, dict):
            lines.append(f"| {k} | {v['rounds']} | {v['median_round_s']} | {v['first_round_s']} | "
                         f"{v['startup_and_evals_s']} | {v['wall_s']} |")
    lines += ["", f"n100 metrics.jsonl bit-identical over two runs: {res['n100_identical']}; "
              f"n100 / n10 median round time: {res['n100_over_n10']} (first pair), "
              f"{res['n100_again_over_n10_again']} (second pair)"]
    (out / "scale.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
