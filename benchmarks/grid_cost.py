"""Where a grid seed's time goes, read from the cells it wrote (no re-run).

Every cell of ``fl-mdisc grid`` writes ``timing.jsonl`` (each round's wall seconds and each client's own call seconds,
measured inside the ClientApp) and ``summary.json`` (the cell's wall seconds from its start to its summary). This script
splits each cell's wall into

* attacker calls: the malicious clients' call seconds (Pang's lambda-update: two back-propagations through a graph
  built with ``create_graph=True`` on the 100 trigger + 500 validation images, every round the attacker is sampled);
* honest calls: the honest clients' call seconds (one batch, or ``fed.local_steps`` batches under FedAvg);
* server and messaging: round seconds not spent in client calls (DGC's probe scoring, aggregation, Flower/Ray);
  negative when clients ran side by side, so it is only meaningful with one client at a time per lane;
* start-up and evaluations: the cell's wall minus its rounds (calibration fit or cache hit, round-0 evaluation,
  the test evaluations every ``eval_every`` rounds);

and sums them per setting. The client seconds are CPU-bound work measured where it ran; on a machine with ``--cores``
cores no schedule can finish the clients' work in less than their sum divided by the cores: that is the lower bound
printed at the end (the server's work, start-up and evaluations come on top).

    .venv/bin/python benchmarks/grid_cost.py /path/to/grid/cells --seed 2 [--cores 2] [--sweep-wall-s S]

``--measure`` adds the grid's work in CPU-seconds (run it on an otherwise idle machine: beside a running sweep
the per-call CPU time came out 2-2.6x larger, OpenMP threads spinning against the other processes): it times (with
``time.process_time``, one torch thread, in this process) one honest call, one FedAvg 5-step call, one attacker call,
DGC's probe scoring of one update and one test evaluation, each the median of ``--repeats`` runs at theta_start of
burn-in seed ``--seed``, and multiplies them by the calls the cells made. Their sum divided by ``--cores`` is the
least wall any schedule of the grid's work can take on that many cores (Flower, Ray, start-up and the calibration
fits come on top).
"""
import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

SCENARIOS = ("clean", "poisoned", "attack")


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def split_name(name: str) -> tuple[str, str, str, int]:
    """'dir0.5-n100-k10-f10-poisoned-dgc-s2' -> ('dir0.5-n100-k10-f10', 'poisoned', 'dgc', 2)."""
    parts = name.split("-")
    seed = int(parts[-1][1:])
    for i, p in enumerate(parts):
        if p in SCENARIOS:
            return "-".join(parts[:i]), p, "-".join(parts[i + 1:-1]), seed
    raise ValueError(f"{name}: not a grid cell name (setting-scenario-strategy-sSEED)")


def cell_cost(cell: Path) -> dict:
    """The wall split of one complete cell (see the module docstring)."""
    timing = _jsonl(cell / "timing.jsonl")
    rounds = _jsonl(cell / "rounds.jsonl")
    wall = float(json.loads((cell / "summary.json").read_text())["wall_s"])
    malicious = {str(c["partition-id"]) for r in rounds for c in r["clients"] if c.get("malicious")}
    attacker = honest = round_s = 0.0
    attacker_calls = honest_calls = 0
    for row in timing:
        round_s += float(row["seconds"])
        for pid, s in row["clients"].items():
            if pid in malicious:
                attacker += s
                attacker_calls += 1
            else:
                honest += s
                honest_calls += 1
    return {"wall": wall, "rounds": round_s, "attacker": attacker, "honest": honest,
            "server": round_s - attacker - honest, "startup_evals": wall - round_s,
            "attacker_calls": attacker_calls, "honest_calls": honest_calls}


def work_counts(cells: Path, seed: int) -> dict:
    """What the seed's cells did: honest one-step calls, FedAvg 5-step calls, attacker calls, DGC-scored updates
    (plus one global-model scoring per DGC round for the statistic's base), test evaluations after round 0."""
    n = defaultdict(int)
    for cell in sorted(cells.iterdir()):
        if not (cell / "summary.json").is_file():
            continue
        try:
            setting, _scenario, strategy, s = split_name(cell.name)
        except ValueError:
            continue
        if s != seed:
            continue
        rounds = _jsonl(cell / "rounds.jsonl")
        for r in rounds:
            for c in r["clients"]:
                key = "attacker" if c.get("malicious") and c.get("poisoned") else (
                    "fedavg5" if setting.startswith("fedavg5") else "honest")
                n[key] += 1
            if strategy == "dgc":
                n["dgc_scored"] += len(r["clients"]) + 1
        n["evals"] += len(_jsonl(cell / "metrics.jsonl")) - 1
    return dict(n)


def measure_costs(seed: int, repeats: int) -> dict:
    """CPU-seconds of one call of each kind (median of ``repeats``), one torch thread, at theta_start."""
    import statistics
    import time

    import torch

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root))
    from clients.honest import train_honest
    from clients.malicious import train_malicious
    from fl_mdisc.burnin import ensure_burnin, load_model
    from fl_mdisc.config import compose, resolve_paths, to_json
    from fl_mdisc.data import to_float
    from fl_mdisc.experiment import make_plan
    from fl_mdisc.md import ProbeMD
    from fl_mdisc.models import get_params
    from fl_mdisc.train import evaluate

    def cpu(fn) -> float:
        out = []
        for i in range(repeats + 1):
            t = time.process_time()
            fn(i)
            out.append(time.process_time() - t)
        return statistics.median(out[1:])  # the first call fills the per-process caches

    base = ["preset=cpu", f"seed={seed}", "client_threads=1", "attacker_threads=1", "server_threads=1"]
    costs = {}
    for key, extra in (("honest", ["attack=none"]), ("fedavg5", ["attack=none", "fed.num_clients=10",
                       "fed.attacker_data=pool", "fed.local_steps=5", "fed.client_lr=0.05", "fed.server_lr=1.0",
                       "fed.server_momentum=0.0"]), ("attacker", ["attack=lambda_update"])):
        cfg = compose(base + extra)
        resolve_paths(cfg)
        entry = ensure_burnin(cfg)
        cj = to_json(cfg)
        model = load_model(cfg, entry["start"], entry["start_sha"], "cpu")
        params = get_params(model)
        conf = {"phase": "accumulate", "start-path": entry["start"], "start-sha": entry["start_sha"],
                "hist-path": entry["hist"], "hist-sha": entry["hist_sha"]}
        if key == "attacker":
            pid = max(make_plan(cfg).malicious)
            costs[key] = cpu(lambda i: train_malicious(cj, params, {**conf, "server-round": i + 2}, pid))
        else:
            costs[key] = cpu(lambda i: train_honest(cj, params, {**conf, "server-round": i + 2}, 0))
    torch.set_num_threads(1)
    cfg = compose(base + ["strategy=dgc"])
    resolve_paths(cfg)
    entry = ensure_burnin(cfg)
    plan = make_plan(cfg)
    model = load_model(cfg, entry["start"], entry["start_sha"], "cpu")
    probe_x = to_float(plan.ds.x_train[plan.split.probe[: int(cfg.strategy.probe_size)]])
    hist = get_params(load_model(cfg, entry["hist"], entry["hist_sha"], "cpu"))
    prober = ProbeMD(load_model(cfg, entry["start"], entry["start_sha"], "cpu"), probe_x, hist)
    params = get_params(model)
    costs["dgc_scored"] = cpu(lambda i: prober([params]))
    costs["evals"] = cpu(lambda i: evaluate(model, plan.ds.x_test, plan.ds.y_test))
    return costs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cells", type=Path)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--sweep-wall-s", type=float, default=None, help="the sweep's own wall time, to print beside")
    ap.add_argument("--measure", action="store_true", help="also time each kind of work in CPU-seconds (see above)")
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args(argv)
    per = defaultdict(lambda: defaultdict(float))
    n_cells = 0
    for cell in sorted(a.cells.iterdir()):
        if not (cell / "summary.json").is_file() or not (cell / "timing.jsonl").is_file():
            continue
        try:
            setting, scenario, _strategy, seed = split_name(cell.name)
        except ValueError:
            continue
        if seed != a.seed:
            continue
        n_cells += 1
        for k, v in cell_cost(cell).items():
            per[(setting, scenario)][k] += v
    if not n_cells:
        print(f"no complete cell of seed {a.seed} under {a.cells}", file=sys.stderr)
        return 2
    cols = ("wall", "startup_evals", "server", "honest", "attacker")
    print(f"seed {a.seed}: {n_cells} complete cells under {a.cells}; minutes (sums over the cells)\n")
    print("| setting | scenario | cells' wall | start-up + evals | server + messaging | honest calls | attacker calls "
          "| honest / attacker calls |")
    print("|---|---|---|---|---|---|---|---|")
    tot = defaultdict(float)
    for (setting, scenario), d in sorted(per.items()):
        for k, v in d.items():
            tot[k] += v
        print(f"| {setting} | {scenario} | " + " | ".join(f"{d[c] / 60:.1f}" for c in cols)
              + f" | {int(d['honest_calls'])} / {int(d['attacker_calls'])} |")
    print("| **all** | | " + " | ".join(f"**{tot[c] / 60:.1f}**" for c in cols)
          + f" | {int(tot['honest_calls'])} / {int(tot['attacker_calls'])} |")
    client = tot["honest"] + tot["attacker"]
    print(f"\nclient calls alone: {client / 60:.1f} CPU-min ({tot['attacker'] / 60:.1f} of them the attacker's); "
          f"on {a.cores} cores at least {client / 60 / a.cores:.1f} min of wall before any server work, "
          "start-up or evaluation")
    if a.sweep_wall_s:
        print(f"the sweep's wall: {a.sweep_wall_s / 60:.1f} min")
    if a.measure:
        counts = work_counts(a.cells, a.seed)
        costs = measure_costs(a.seed, a.repeats)
        print("\n| work | CPU-s per call (1 thread) | calls in the seed's cells | CPU-min |")
        print("|---|---|---|---|")
        total = 0.0
        for k in ("honest", "fedavg5", "attacker", "dgc_scored", "evals"):
            m = costs[k] * counts.get(k, 0) / 60
            total += m
            print(f"| {k} | {costs[k]:.3f} | {counts.get(k, 0)} | {m:.1f} |")
        print(f"| **all** | | | **{total:.1f}** |")
        print(f"\nleast wall on {a.cores} cores for this work alone: {total / a.cores:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
