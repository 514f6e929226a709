"""Reproduction commands: ``fl-mdisc table13`` (Table 13, federated) and ``fl-mdisc table1`` (Table 1, online).

Each cell is one Flower simulation (``fl-mdisc run`` semantics: the same app through ``flwr run``) written to
``<out_dir>/cells/<name>/``; a rerun skips cells whose ``summary.json`` exists (interrupted sweeps resume).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from omegaconf import OmegaConf

from fl_mdisc.errors import ConfigError, FlMdiscError
from .report import (aggregate_cells, command_line, detection, paper_table13, plot_md_hist, plot_table13, read_jsonl,
                     report_steps, write_table13)

SCENARIO_ATTACK = {"clean": "none"}


def pop_list(overrides: list[str], key: str, default: list) -> tuple[list, list[str]]:
    """Take ``key=[a,b]`` (or ``key=a``) out of the override list."""
    rest, val = [], default
    for ov in overrides:
        if ov.startswith(key + "="):
            raw = ov.split("=", 1)[1].strip()
            items = [x.strip().strip("'\"") for x in raw.strip("[]").split(",") if x.strip()]
            if not items:
                raise ConfigError(f"{key} must not be empty, e.g. {key}=[{','.join(map(str, default))}]")
            val = items
        else:
            rest.append(ov)
    return val, rest


def _get(overrides: list[str], key: str):
    for ov in overrides:
        if ov.startswith(key + "="):
            return ov.split("=", 1)[1]
    return None


CELL_KEYS = ("preset_name", "protocol", "seed", "num_rounds", "trigger", "dataset.name", "model.name", "fed.num_clients",
             "fed.num_malicious", "fed.server_lr", "strategy.name", "strategy.mode", "strategy.clip_norm",
             "strategy.mu", "strategy.tau", "strategy.norm", "strategy.statistic", "strategy.target_fpr", "attack.name",
             "attack.lam", "attack.norm_multiple", "attack.stealth_drop", "attack.trigger_scale",
             "defense.name", "burnin.seed")
CELL_KEYS += ("fed.clients_per_round", "fed.partition", "fed.dirichlet_alpha", "fed.classes_per_client",
              "fed.local_steps", "fed.client_lr", "fed.server_momentum", "fed.attacker_data", "fed.batch_size",
              "attack.beta", "attack.md_form", "attack.md_budget", "assume.f", "strategy.gate", "strategy.f")
FITTED_KEYS = ("strategy.clip_norm", "strategy.mu", "strategy.tau")  # null asks for the run's own calibration
# keys added after cells were recorded: a recorded config without them ran with these values
LATER_KEYS = {"fed.attacker_data": "partition", "fed.classes_per_client": 2, "attack.beta": 0.0, "attack.md_form": "paper"}
# DGC keys a config may lack (added later, or retired once one value was left): the value it ran with
DGC_FIXED = {"strategy.mode": "clip", "strategy.statistic": "increase"}
# options retired once one value was left: a recorded cell with that value is the same question
RETIRED = {"attack.norm_ref": "start"}


def _key(cfg, dotted: str):
    from omegaconf import OmegaConf

    v = OmegaConf.select(cfg, dotted, default=None)
    if v is None and dotted in LATER_KEYS:
        return LATER_KEYS[dotted]
    if v is None and cfg.strategy.name == "dgc":
        return DGC_FIXED.get(dotted)
    return v


def check_cell_matches(cell: dict, out: Path) -> None:
    """A complete cell is reused only if it answers the same question: its recorded config must agree with
    the sweep's on the keys that define the experiment; otherwise one clear error, never a silent mix."""
    from omegaconf import OmegaConf

    from fl_mdisc.config import compose

    recorded_path = out / "config.yaml"
    if not recorded_path.is_file():
        raise FlMdiscError(f"cell {cell['name']} in {out} has a summary but no config.yaml; delete that folder")
    recorded = OmegaConf.load(recorded_path)
    wanted = compose(cell["overrides"])
    diff = [f"{k}: {_key(recorded, k)} != {_key(wanted, k)}" for k in CELL_KEYS
            if _key(recorded, k) != _key(wanted, k) and not (k in FITTED_KEYS and _key(wanted, k) is None)]
    for k, kept in RETIRED.items():  # a cell recorded with another value of a retired option asked another question
        if _key(recorded, k) not in (None, kept):
            diff.append(f"{k}: {_key(recorded, k)} (retired; only {kept} is left)")
    if _key(recorded, "attack.ref_quantile") is not None and _key(recorded, "attack.md_budget") is not None:
        # the DGC-aware attacker's first budget rule (a multiple of its honest statistic at theta_start, retired with
        # the key): same md_budget, another question; unaware cells (md_budget null) never used it and stay valid
        diff.append("attack.md_budget: a multiple of the retired theta_start reference (attack.ref_quantile) != a "
                    "multiple of the calibrated level")
    if diff:
        raise FlMdiscError(f"cell {cell['name']} in {out} was run with another config ({'; '.join(diff)}); "
                           "use another out_dir, or delete that cell folder to rerun it")


def run_cells(cells: list[dict], quiet: bool = True, group: int = 8) -> list[dict]:
    """Run each cell (skipping complete ones); show cell i/n, round r/R, elapsed and ETA.

    Consecutive pending cells of the same federation (number of SuperNodes, client resources) run in one ``flwr
    run`` of up to ``group`` cells (``config-files``: the ServerApp runs them in turn), which saves the SuperLink +
    Ray start-up and teardown (~25 s) per cell; every cell still has its own folder, config, seed and numbers
    (clients are stateless: tests/test_simulation.py checks a cell gives the same metrics alone and in a group).

    ``sweep.parallel=K`` (default 1) runs up to K groups at once, each ``flwr run`` with its own SuperLink, a
    private Ray with 1/K of the CPUs and, with several GPUs, one GPU in turn (``app.launch.lane_shares``); a cell's
    numbers do not depend on its group or lane at equal torch threads (tests/test_e2e_flwr.py); each lane's threads are
    capped at its CPUs (:func:`cap_threads`), and the capped counts are recorded in the cell's config."""
    from fl_mdisc.config import engine, ray_address

    from .runner import gpus_per_client, prepare, warm_burnin

    t0 = time.time()
    pending = []
    for i, cell in enumerate(cells, 1):
        out = Path(cell["out_dir"])
        if (out / "summary.json").is_file():
            check_cell_matches(cell, out)
            print(f"[cell {i}/{len(cells)}] {cell['name']}: complete, skipped", flush=True)
            continue
        cfg, path = prepare(cell["overrides"] + [f"out_dir={out}"])
        pending.append((i, cell, cfg, path))
    parallel = sweep_parallel(pending[0][2]) if pending else 1
    runs: list[tuple] = []  # consecutive pending cells of one federation
    for item in pending:
        cfg = item[2]
        fed = (int(cfg.fed.num_clients), int(cfg.client_threads), gpus_per_client(cfg), str(cfg.data_root),
               ray_address(cfg), engine(cfg))
        if runs and runs[-1][0] == fed:
            runs[-1][1].append(item)
        else:
            runs.append((fed, [item]))
    batches = [(fed, part) for fed, items in runs
               for part in split_groups(items, group_size(len(items), int(group), parallel), parallel)]
    for _fed, batch in batches:  # burn-ins and calibrations (attacker's, server's) first, before any lane starts Ray
        for _i, _cell, cfg, _path in batch:
            warm_burnin(cfg)
    if parallel <= 1 or len(batches) <= 1:
        for fed, batch in batches:
            _run_batch(fed, batch, len(cells), t0, quiet, None)
        return cells
    from concurrent.futures import ThreadPoolExecutor

    from .launch import lane_shares, stop_all

    shares = lane_shares(min(parallel, len(batches)), batches[0][0][1])
    capped = cap_threads([item for _fed, batch in batches for item in batch], int(shares[0]["num_cpus"]))
    print(f"[sweep] {len(batches)} groups on {len(shares)} lanes at once ({shares[0]['num_cpus']} CPUs each"
          + (f"; torch threads capped at {shares[0]['num_cpus']} in {capped} cells" if capped else "") + ")", flush=True)
    free = list(range(len(shares)))
    import threading

    lock = threading.Lock()

    def one(fed_batch):
        with lock:
            k = free.pop()
        try:
            _run_batch(fed_batch[0], fed_batch[1], len(cells), t0, quiet, shares[k])
        finally:
            with lock:
                free.append(k)

    pool = ThreadPoolExecutor(max_workers=len(shares))
    try:
        for fut in [pool.submit(one, b) for b in batches]:
            fut.result()
    except BaseException:
        stop_all()  # Ctrl-C or a failed lane: stop every lane's SuperLink and Ray, then let the threads unwind
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return cells


THREAD_KEYS = ("server_threads", "client_threads", "attacker_threads")


def cap_threads(items: list[tuple], lane_cpus: int) -> int:
    """Cap each pending cell's torch threads (``server_threads``, ``client_threads``, ``attacker_threads``) at its
    lane's CPUs and rewrite its config file; returns how many cells changed.

    Lanes share the machine: two lanes each running a 2-thread attacker on 2 cores oversubscribe them, and torch's
    OpenMP threads then spin against each other. Measured here (by ``benchmarks/lane_threads.py``, retired; at commit
    ee1e392): one lambda-update attacker call takes 1.50 s with 1 thread and 0.82 s with 2 alone, but 3.4-3.6 s with 2
    threads when two run at once, against 1.54-1.62 s with 1 thread each. The thread count changes float rounding (CPU
    kernels split their sums by thread), so the capped counts are written into the cell's ``config.yaml``: a cell's
    numbers are a function of its recorded config, and a cell run in a parallel sweep may differ in the last bits from
    the same cell run alone with more threads."""
    from omegaconf import OmegaConf

    changed = 0
    for _i, _cell, cfg, path in items:
        over = {k: lane_cpus for k in THREAD_KEYS
                if OmegaConf.select(cfg, k) is not None and int(OmegaConf.select(cfg, k)) > lane_cpus}
        if over:
            for k, v in over.items():
                OmegaConf.update(cfg, k, v)
            Path(path).write_text(OmegaConf.to_yaml(cfg))
            changed += 1
    return changed


def group_size(n: int, group: int, parallel: int) -> int:
    """Cells per ``flwr run`` for a run of ``n`` consecutive cells of one federation: at most ``group``; with
    ``parallel`` lanes, also at most ceil(n / parallel), so every lane can take a share of each federation. (One group
    per federation let the slowest federation, FedAvg with 5 local steps in the grid, run its 8 cells on one lane
    while the other lane sat idle; each extra group costs ~25 s of SuperLink and Ray start-up.)"""
    size = max(1, int(group))
    return min(size, max(1, -(-int(n) // int(parallel)))) if parallel > 1 else size


def split_groups(items: list, size: int, parallel: int) -> list[list]:
    """Split one federation's consecutive cells into groups of at most ``size``: in order when sequential, and with
    ``parallel`` lanes by stride (group k takes cells k, k + g, ...), so that each group mixes the federation's clean
    and poisoned cells. In order, grid seed 0 gave one lane the FedAvg setting's 4 clean cells and the other its 4
    poisoned ones (the attacker's call is ~1.5 s a round): the first lane idled ~10 min at the end of the grid."""
    g = -(-len(items) // max(1, int(size)))
    if parallel <= 1 or g <= 1:
        return [items[j: j + size] for j in range(0, len(items), size)]
    return [items[k::g] for k in range(g)]


def sweep_parallel(cfg) -> int:
    """``sweep.parallel``: how many groups of cells run at once (default 1: one after the other)."""
    from omegaconf import OmegaConf

    return int(OmegaConf.select(cfg, "sweep.parallel", default=1))  # validated (>= 1, integer) when composed


def _run_batch(fed, batch, n_cells: int, t0: float, quiet: bool, lane: dict | None) -> None:
    """One ``flwr run`` of a group of cells of one federation (in a lane of its own when ``lane`` is given)."""
    from .launch import run_flwr
    from .runner import project_dir

    t_batch = time.time()

    def progress(batch=batch, t_batch=t_batch):
        for i, cell, cfg, _p in batch:
            out = Path(cell["out_dir"])
            if (out / "summary.json").is_file():
                continue
            total = int(cfg.num_rounds) + (1 if cfg.trigger else 0)
            done = len(read_jsonl(out / "rounds.jsonl"))
            return (f"[cell {i}/{n_cells}] {cell['name']}: round {done}/{total} "
                    f"(group of {len(batch)}: {time.time() - t_batch:.0f}s; sweep {time.time() - t0:.0f}s)")
        return f"[group of {len(batch)}] finishing (sweep {time.time() - t0:.0f}s)"

    names = ", ".join(c["name"] for _i, c, _cfg, _p in batch)
    ids = [i for i, *_ in batch]
    span = f"{ids[0]}..{ids[-1]}" if ids == list(range(ids[0], ids[-1] + 1)) else ",".join(map(str, ids))
    print(f"[cells {span}/{n_cells}] starting {names}", flush=True)
    paths = [p for _i, _c, _cfg, p in batch]
    status = run_flwr(project_dir(), paths if len(paths) > 1 else paths[0], fed[0], fed[1], fed[2],
                      batch[0][2].data_root, stream=not quiet and lane is None, progress=progress,
                      ray_address=fed[4], engine=fed[5], lane=lane)
    if status.get("status") != "finished:completed":
        raise FlMdiscError(f"cell(s) {names} did not complete ({status.get('status')}): "
                           f"{str(status.get('status-details', ''))[-400:]}")
    missing = [c["name"] for _i, c, _cfg, _p in batch if not (Path(c["out_dir"]) / "summary.json").is_file()]
    if missing:
        raise FlMdiscError(f"cell(s) {missing} ended without a summary.json; rerun the command to resume them")


def calibration_rows(runs: list[dict]) -> list[dict]:
    """What each seed's DGC cell computed where it ran (one row per seed, from its calibration.json)."""
    rows, seen = [], set()
    for r in runs:
        p = Path(r["out_dir"]) / "calibration.json"
        if r["seed"] in seen or not p.is_file():
            continue
        seen.add(r["seed"])
        cal = json.loads(p.read_text())
        fit, dgc = cal.get("server_fit") or {}, cal.get("dgc") or {}
        rows.append({"seed": r["seed"], "burnin_seed": (fit.get("key") or {}).get("seed"),
                     "hist_accuracy": cal["burnin"]["hist_accuracy"], "start_accuracy": cal["burnin"]["start_accuracy"],
                     "clip_norm": dgc.get("clip_norm"), "statistic": dgc.get("statistic"), "mu": dgc.get("mu"),
                     "tau": dgc.get("tau"), "fpr_in_sample": fit.get("fpr_in_sample")})
    return sorted(rows, key=lambda x: x["seed"])


def load_run(cell: dict) -> dict:
    out = Path(cell["out_dir"])
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").is_file() else {}
    return {**cell, "metrics": read_jsonl(out / "metrics.jsonl"), "rounds": read_jsonl(out / "rounds.jsonl"),
            "summary": summary}


def default_table13_rounds(cfg) -> int:
    """The preset's Table 13 length for cfg.protocol (``tables.table13_rounds``: one number, or one per protocol)."""
    rounds = cfg.tables.table13_rounds
    if OmegaConf.is_dict(rounds):
        if cfg.protocol not in rounds:
            raise ConfigError(f"tables.table13_rounds has no entry for protocol {cfg.protocol!r}; "
                              f"add one to the preset or pass num_rounds=")
        rounds = rounds[cfg.protocol]
    return int(rounds)


def table13(overrides: list[str], quiet: bool = True) -> dict:
    from fl_mdisc.config import compose

    command = command_line("table13", overrides)
    seeds, overrides = pop_list(overrides, "seeds", [0])
    # the paper's DGC row is the paper rule (P_t = mu + tau * t); the history gate (strategy "dgc") can be added for
    # the federated protocol (the harness has one participant a round, no cohort to judge against)
    strategies, overrides = pop_list(overrides, "strategies", ["st", "gc", "dgc_paper"])
    scenarios, overrides = pop_list(overrides, "scenarios", ["clean", "poisoned"])
    poison_attack = _get(overrides, "poison_attack") or "lambda_update"
    overrides = [o for o in overrides if not o.startswith("poison_attack=")]
    detect_attacks, overrides = pop_list(overrides, "detect_attacks", [])
    base = compose([o for o in overrides if not o.startswith("out_dir=")] + ["strategy=st"])  # preset, protocol
    protocol = base.protocol
    out_dir = _get(overrides, "out_dir")
    if not out_dir:
        out_dir = f"outputs/table13-{protocol}-{base.preset_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    rest = [o for o in overrides if not o.startswith("out_dir=")]
    if _get(rest, "num_rounds") is None:
        rest.append(f"num_rounds={default_table13_rounds(base)}")
    R = int(_get(rest, "num_rounds"))
    eval_every = int(_get(rest, "eval_every") or base.eval_every)
    steps = report_steps(R, eval_every)
    cells = []
    for scen in scenarios:
        for strat in strategies:
            for seed in seeds:
                att = SCENARIO_ATTACK.get(scen, poison_attack)
                name = f"{protocol}-{scen}-{strat}-s{seed}"
                cells.append({"name": name, "scenario": scen, "strategy": strat, "seed": int(seed), "attack": att,
                              "out_dir": str(out / "cells" / name),
                              "overrides": rest + [f"strategy={strat}", f"attack={att}", f"seed={seed}"]})
    extra = []
    for att in detect_attacks:  # detection view only (e.g. the data-poisoning attacker under DGC)
        for seed in seeds:
            name = f"{protocol}-detect-{att}-dgc_paper-s{seed}"
            extra.append({"name": name, "scenario": "poisoned", "strategy": "dgc_paper", "seed": int(seed), "attack": att,
                          "out_dir": str(out / "cells" / name),
                          "overrides": rest + ["strategy=dgc_paper", f"attack={att}", f"seed={seed}"]})
    run_cells(cells + extra, quiet)
    runs = [load_run(c) for c in cells]
    det_runs = [load_run(c) for c in cells + extra if c["strategy"].startswith("dgc")]
    first = compose(cells[0]["overrides"])
    doc = {"preset": str(base.preset_name), "dataset": str(base.dataset.name), "model": str(base.model.name),
           "protocol": protocol, "num_clients": int(first.fed.num_clients),
           "num_malicious": int(compose(cells[-1]["overrides"]).fed.num_malicious),
           "poison_attack": poison_attack, "seeds": [int(s) for s in seeds], "steps": steps,
           "cells": aggregate_cells(runs, steps), "paper": paper_table13(),
           "detection": detection(det_runs), "calibration": calibration_rows(det_runs),
           "command": command}
    write_table13(doc, out)
    plot_table13(doc, out / "table13.png")
    plot_md_hist(det_runs, out / "md_hist.png")
    print((out / "table13.md").read_text())
    print(f"fl-mdisc: table13 written to {out}")
    return doc


TABLE1_METHODS = {"st": ["strategy=st", "defense=none"], "gc": ["strategy=gc", "defense=none"],
                  "at": ["strategy=st", "defense=at"], "dsc": ["strategy=st", "defense=dsc"]}


def table1(overrides: list[str], quiet: bool = True) -> dict:
    """The paper's online setting as a one-client federation with the stream-poisoning placement.

    ``datasets=[cifar10,svhn,cifar100]`` runs the paper's three blocks in one sweep (one ``flwr run``: the cells
    share their federation) and writes one folder per dataset under ``out_dir``; one dataset (``dataset=`` or the
    default) writes into ``out_dir`` itself."""
    from fl_mdisc.config import compose

    command = command_line("table1", overrides)
    seeds, overrides = pop_list(overrides, "seeds", [0])
    methods, overrides = pop_list(overrides, "methods", list(TABLE1_METHODS))
    scenarios, overrides = pop_list(overrides, "scenarios", ["clean", "poisoned"])
    unknown = [m for m in methods if m not in TABLE1_METHODS]
    if unknown:
        raise ConfigError(f"unknown table1 method(s) {unknown}; choose from {list(TABLE1_METHODS)}")
    datasets, overrides = pop_list(overrides, "datasets", [])
    rest = [o for o in overrides if not o.startswith("out_dir=")]
    base = compose(rest)
    datasets = datasets or [str(base.dataset.name)]
    for d in datasets:
        compose(rest + [f"dataset={d}"])  # every dataset is a valid config before the first cell starts
    out = Path(_get(overrides, "out_dir") or f"outputs/table1-{base.preset_name}-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    R = int(_get(rest, "num_rounds") or base.tables.table1_rounds)
    drop = float(_get(rest, "monitor_drop") or base.tables.table1_monitor_drop)
    common = ["fed.num_clients=1", "fed.num_malicious=0", f"fed.server_lr={base.harness.server_lr}",
              f"num_rounds={R}", f"eval_every={max(1, R // 10)}", "log_md=true"]
    rest = [o for o in rest if not o.startswith(("num_rounds=", "monitor_drop=", "dataset="))]
    cells = [c for d in datasets for c in _table1_cells(d, scenarios, methods, seeds, rest + common, drop, out)]
    run_cells(cells, quiet)
    docs = {}
    for d in datasets:
        where = out if len(datasets) == 1 else out / d
        where.mkdir(parents=True, exist_ok=True)
        meta = {"preset": str(base.preset_name), "dataset": d, "model": str(base.model.name), "rounds": R,
                "monitor_drop": drop, "seeds": [int(s) for s in seeds], "command": command}
        docs[d] = _write_table1([load_run(c) for c in cells if c["dataset"] == d], meta, where)
    return docs[datasets[0]] if len(datasets) == 1 else docs


def _table1_cells(dataset: str, scenarios, methods, seeds, overrides: list[str], drop: float, out: Path) -> list[dict]:
    """The cells of one dataset's block (CIFAR-10's keep their names, the others are prefixed with the dataset)."""
    prefix = "" if dataset == "cifar10" else f"{dataset}-"
    cells = []
    for scen in scenarios:
        for meth in methods:
            for seed in seeds:
                att = ["attack=none"] if scen == "clean" else ["attack=stream_poison", "attack.victims=1",
                                                                f"monitor_drop={drop}"]
                name = f"{prefix}online-{scen}-{meth}-s{seed}"
                cells.append({"name": name, "scenario": scen, "method": meth, "strategy": meth, "seed": int(seed),
                              "dataset": dataset, "out_dir": str(out / "cells" / name),
                              "overrides": overrides + [f"dataset={dataset}"] + TABLE1_METHODS[meth] + att
                              + [f"seed={seed}"]})
    return cells


def _write_table1(runs: list[dict], meta: dict, out: Path) -> dict:
    """``table1.{json,md,csv}`` and ``md_stream.png`` of one dataset's block, beside the paper's rows for it."""
    import csv

    from .report import PAPER_TABLE1, plot_md_stream, table1_markdown, table1_rows

    doc = {k: meta[k] for k in ("preset", "dataset", "model", "rounds", "monitor_drop", "seeds")}
    doc.update(rows=table1_rows(runs), paper=PAPER_TABLE1.get(meta["dataset"]), command=meta["command"])
    (out / "table1.json").write_text(json.dumps(doc, indent=1))
    (out / "table1.md").write_text(table1_markdown(doc))
    with open(out / "table1.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["scenario", "method", "seeds", "start", "start_std", "batch", "batch_std", "poison", "poison_std",
                    "trigger", "trigger_std", "delta", "delta_std"])
        for r in doc["rows"]:
            w.writerow([r["scenario"], r["method"], " ".join(map(str, r["seeds"])), *r["start"], *r["batch"],
                        *r["poison"], *r["trigger"], *r["delta"]])
    plot_md_stream([r for r in runs if r["scenario"] == "poisoned" and r["method"] == "st"], out / "md_stream.png")
    print((out / "table1.md").read_text())
    print(f"fl-mdisc: table1 written to {out}")
    return doc


def expand_sweep(overrides: list[str]) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """Hydra's sweep syntax, parsed by hydra's own override parser: ``key=a,b`` (and ``range(..)``, ``choice(..)``)
    become sweep dimensions; the rest stays fixed. Returns (fixed overrides, [(key, values), ...])."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as exc:
        raise ConfigError(f"cannot parse the overrides ({exc}); write key=value or key=a,b,c for a sweep") from None
    fixed, dims = [], []
    for raw, o in zip(overrides, parsed):
        if o.is_sweep_override():
            dims.append((o.get_key_element(), [str(v) for v in o.sweep_string_iterator()]))
        else:
            fixed.append(raw)
    return fixed, dims


def multirun(overrides: list[str], quiet: bool = True) -> dict:
    """``fl-mdisc run --multirun k=a,b seed=0,1,2 ...``: the cartesian product as cells of one sweep (hydra's basic
    sweeper semantics), complete cells skipped, progress shown, one summary table at the end
    (``multirun.{md,json}`` in ``out_dir``)."""
    import itertools

    from fl_mdisc.config import compose

    fixed, dims = expand_sweep(overrides)
    if not dims:
        raise ConfigError("--multirun needs at least one swept key, e.g. strategy=gc,dgc seed=0,1,2")
    rest = [o for o in fixed if not o.startswith("out_dir=")]
    base = compose(rest)
    out = Path(_get(fixed, "out_dir") or f"outputs/multirun-{base.preset_name}-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    cells = []
    for combo in itertools.product(*[vals for _k, vals in dims]):
        sets = [f"{k}={v}" for (k, _vals), v in zip(dims, combo)]
        name = re.sub(r"[^A-Za-z0-9._-]", "-", "_".join(f"{k.split('.')[-1]}-{v}" for (k, _vals), v in zip(dims, combo)))
        cells.append({"name": name, "values": dict(zip([k for k, _ in dims], combo)), "out_dir": str(out / "cells" / name),
                      "overrides": rest + sets, "seed": 0, "scenario": "", "strategy": ""})
    for c in cells:  # every combination is a valid config before the first one starts
        compose(c["overrides"])
    run_cells(cells, quiet)
    rows = []
    for c in cells:
        s = load_run(c)["summary"]
        det = s.get("detection") or {}
        rows.append({**c["values"], "mean_accuracy": s.get("mean_accuracy"), "accuracy_final": s.get("accuracy_final"),
                     "trigger_drop": s.get("trigger_drop"), "precision": det.get("precision"), "recall": det.get("recall"),
                     "out_dir": c["out_dir"]})
    keys = [k for k, _ in dims]
    cols = ["mean_accuracy", "accuracy_final", "trigger_drop", "precision", "recall"]
    lines = [f"# fl-mdisc multirun ({len(cells)} cells)", "", f"Fixed: `{' '.join(fixed) or '(defaults)'}`", "",
             "| " + " | ".join(keys + cols) + " |", "|" + "---|" * (len(keys) + len(cols))]
    for r in rows:
        lines.append("| " + " | ".join([str(r[k]) for k in keys]
                                       + ["–" if r[c] is None else f"{r[c]:.3g}" if isinstance(r[c], float) else str(r[c])
                                          for c in cols]) + " |")
    doc = {"fixed": fixed, "sweep": dict(dims), "rows": rows}
    (out / "multirun.json").write_text(json.dumps(doc, indent=1))
    (out / "multirun.md").write_text("\n".join(lines) + "\n")
    print((out / "multirun.md").read_text())
    print(f"fl-mdisc: multirun written to {out}")
    return doc
