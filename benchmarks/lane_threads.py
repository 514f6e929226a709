"""Why a parallel sweep caps each lane's torch threads at its CPU share (``app.tables.cap_threads``).

Times one call of Pang's lambda-update attacker (the call that dominates a poisoned round: two back-propagations
through a graph built with ``create_graph=True``) at theta_start of a burn-in seed, wall seconds, median of 5 after
one warm-up call, in four schedules: 1 thread alone, 2 threads alone, two processes at once with 2 threads each
(what two lanes of ``sweep.parallel=2`` did with ``attacker_threads: 2`` on 2 cores), and two processes at once with
1 thread each (the capped lanes).

    FL_MDISC_DATA=../shared/data .venv/bin/python benchmarks/lane_threads.py [--seed 2]

Measured on the 2-core development machine (seed 2): 1.50 s, 0.82 s, 3.43 / 3.56 s, 1.54 / 1.62 s.
"""
import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one(seed: int, threads: int) -> float:
    sys.path.insert(0, str(ROOT))
    from clients.malicious import train_malicious
    from fl_mdisc.burnin import ensure_burnin, load_model
    from fl_mdisc.config import compose, resolve_paths, to_json
    from fl_mdisc.experiment import make_plan
    from fl_mdisc.models import get_params

    cfg = compose(["preset=cpu", f"seed={seed}", f"client_threads={threads}", f"attacker_threads={threads}",
                   "attack=lambda_update"])
    resolve_paths(cfg)
    entry = ensure_burnin(cfg, log=lambda m: None)
    cj = to_json(cfg)
    params = get_params(load_model(cfg, entry["start"], entry["start_sha"], "cpu"))
    conf = {"phase": "accumulate", "start-path": entry["start"], "start-sha": entry["start_sha"],
            "hist-path": entry["hist"], "hist-sha": entry["hist_sha"]}
    pid = max(make_plan(cfg).malicious)
    wall = []
    for i in range(6):
        t = time.perf_counter()
        train_malicious(cj, params, {**conf, "server-round": i + 2}, pid)
        wall.append(time.perf_counter() - t)
    return statistics.median(wall[1:])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--threads", type=int, help=argparse.SUPPRESS)  # internal: one timing in a child process
    args = ap.parse_args(argv)
    if args.threads:
        print(f"{one(args.seed, args.threads):.2f}", flush=True)
        return 0

    def child(threads: int) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, __file__, "--seed", str(args.seed), "--threads", str(threads)],
                                stdout=subprocess.PIPE, text=True)

    print("| schedule | wall seconds per attacker call |\n|---|---|")
    for label, threads, n in (("1 thread, alone", 1, 1), ("2 threads, alone", 2, 1),
                              ("two at once, 2 threads each", 2, 2), ("two at once, 1 thread each", 1, 2)):
        procs = [child(threads) for _ in range(n)]
        print(f"| {label} | {' / '.join(p.communicate()[0].strip() for p in procs)} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
