"""``fl-mdisc bench``: the cost of DSC, AT, DGC and the Flower/Ray layer, measured side by side.

Micro-benchmarks alternate the compared methods batch by batch (same model, same batches), so machine drift
cancels; each ratio is reported as the median with min/max over repeats. The simulation-level numbers come from
real ``flwr run`` simulations of the default experiment (rounds only, start-up reported separately) against the
same rounds in a plain in-process loop that calls the same client functions and the same strategy chain.

This module is wiring (like the CLI): it imports the Flower-side packages lazily; the core never does.
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
from pathlib import Path

import numpy as np
import torch

from fl_mdisc.errors import ConfigError


def _stats(xs):
    return {"median": round(statistics.median(xs), 4), "min": round(min(xs), 4), "max": round(max(xs), 4), "n": len(xs)}


def _time(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def correction_settings(cfg):
    """What the bench's DSC and AT timings use: the run's defence when it is one of them (``defense=dsc
    defense.eps=0.1``), else DSC's own defaults (``conf/defense/dsc.yaml``, the paper's), one source for both."""
    from omegaconf import OmegaConf

    from fl_mdisc.config import conf_dir

    return cfg.defense if cfg.defense.name in ("dsc", "at") else OmegaConf.load(conf_dir() / "defense" / "dsc.yaml")


def micro(cfg, entry, repeats: int = 20) -> dict:
    """DSC/AT vs ST per batch (clean and poisoned), and the attacker's and an honest client's cost."""
    from fl_mdisc.attack import craft_poison, craft_trigger, second_order_term
    from fl_mdisc.burnin import estimate_dsc_threshold, load_model
    from fl_mdisc.correction import at_correct, dsc_correct
    from fl_mdisc.data import stream_batch, to_float
    from fl_mdisc.experiment import make_plan
    from fl_mdisc.md import threshold
    from fl_mdisc.models import get_params, set_params
    from fl_mdisc.train import local_sgd

    torch.set_num_threads(int(cfg.client_threads))
    plan = make_plan(cfg)
    model = load_model(cfg, entry["start"], entry["start_sha"])
    hist = load_model(cfg, entry["hist"], entry["hist_sha"])
    theta = get_params(model)
    est = estimate_dsc_threshold(cfg, entry, log=lambda m: None)
    P = threshold(est["mu"], est["tau"], 0)
    d = correction_settings(cfg)
    pid = 0
    batches = []
    for m in range(repeats):
        idx = stream_batch(plan.partitions[pid], int(cfg.fed.batch_size), int(cfg.seed), pid, m)
        batches.append((to_float(plan.ds.x_train[idx]), torch.as_tensor(plan.ds.y_train[idx])))
    # poisoned versions of the same batches (crafting time is the attacker's, not the defence's)
    att = plan.attacker.get(int(cfg.fed.num_clients) - 1) if plan.attacker else None
    val_idx, trig_idx = (att[0], att[1]) if att else (plan.split.probe[:500], plan.split.probe[:100])
    xv, yv = to_float(plan.ds.x_train[val_idx]), torch.as_tensor(plan.ds.y_train[val_idx])
    xt0, yt = to_float(plan.ds.x_train[trig_idx]), torch.as_tensor(plan.ds.y_train[trig_idx])
    xt = craft_trigger(model, xt0, yt, xv, yv)
    h = second_order_term(model, xt, yt, xv, yv)
    poisoned = [(craft_poison(model, x, y, h), y) for x, y in batches]

    def st(x, y):
        set_params(model, theta)
        local_sgd(model, x, y, 1.0, 1)

    def dsc(x, y):
        set_params(model, theta)
        xc, steps, _ = dsc_correct(model, hist, x, y, P, d.eps, d.step_size, int(d.max_steps), True)
        local_sgd(model, xc, y, 1.0, 1)
        return steps

    def at(x, y):
        set_params(model, theta)
        local_sgd(model, at_correct(model, x, y, d.eps, d.step_size, int(d.max_steps)), y, 1.0, 1)

    out = {"dsc_threshold_P": round(P, 4)}
    for name, data in (("clean", batches), ("poisoned", poisoned)):
        r_dsc, r_at, t_st, corrected = [], [], [], []
        for x, y in data:
            a = _time(lambda: st(x, y))
            holder = {}
            b = _time(lambda: holder.setdefault("s", dsc(x, y)))
            c = _time(lambda: at(x, y)) if name == "clean" else None
            t_st.append(a)
            r_dsc.append(b / a)
            corrected.append(int((holder["s"] > 0).sum()))
            if c is not None:
                r_at.append(c / a)
        out[f"dsc_over_st_{name}"] = _stats(r_dsc)
        out[f"st_batch_s_{name}"] = _stats(t_st)
        out[f"dsc_corrected_per_batch_{name}"] = float(np.mean(corrected))
        if r_at:
            out["at_over_st"] = _stats(r_at)
    return out


def _fake_reply(arrays, metrics, pid):
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
    from flwr.app.message_type import MessageType
    from flwr.app.metadata import Metadata

    md = Metadata(run_id=1, message_id=f"b{pid}", src_node_id=0, dst_node_id=pid + 1, reply_to_message_id="",
                  group_id="", created_at=time.time(), ttl=3600, message_type=MessageType.TRAIN)
    req = Message(RecordDict(), metadata=md)
    return Message(RecordDict({"arrays": ArrayRecord(arrays), "metrics": MetricRecord({**metrics, "partition-id": pid})}),
                   reply_to=req)


def _prime(strategy, arrays):
    from strategies.base import StrategyWrapper

    s = strategy
    while isinstance(s, StrategyWrapper):
        s.current_arrays = [a.copy() for a in arrays]
        s = s.strategy


def inprocess_rounds(cfg, entry, rounds: int, strategy_name: str | None = None) -> dict:
    """The same rounds as a simulation, in a plain loop: same client functions, same strategy chain, no Flower
    transport or Ray. Returns per-round seconds and per-client seconds."""
    from clients.honest import train_honest
    from clients.malicious import train_malicious
    from strategies.factory import build_strategy

    from fl_mdisc.burnin import load_model
    from fl_mdisc.config import to_json
    from fl_mdisc.data import to_float
    from fl_mdisc.experiment import make_plan
    from fl_mdisc.md import ProbeMD
    from fl_mdisc.models import get_params

    plan = make_plan(cfg)
    cfg_json = to_json(cfg)
    model = load_model(cfg, entry["start"], entry["start_sha"])
    hist = load_model(cfg, entry["hist"], entry["hist_sha"])
    probe_md = None
    if cfg.strategy.name == "dgc":
        px = to_float(plan.ds.x_train[plan.split.probe[: int(cfg.strategy.probe_size)]])
        probe_md = ProbeMD(load_model(cfg, entry["start"], entry["start_sha"]), px, get_params(hist))
    strategy, clip, _v = build_strategy(cfg, probe_md=probe_md)
    arrays = get_params(model)
    conf = {"start-path": entry["start"], "start-sha": entry["start_sha"], "hist-path": entry["hist"],
            "hist-sha": entry["hist_sha"], "dsc-mu": 0.0, "dsc-tau": 0.0, "phase": "accumulate"}
    per_round, agg_times, client_times = [], [], {"honest": [], "malicious": []}
    for rnd in range(1, rounds + 1):
        t0 = time.perf_counter()
        c = {**conf, "server-round": rnd}
        replies = []
        for pid in range(int(cfg.fed.num_clients)):
            fn = train_malicious if pid in plan.malicious else train_honest
            t1 = time.perf_counter()
            new, met = fn(cfg_json, arrays, c, pid)
            client_times["malicious" if pid in plan.malicious else "honest"].append(time.perf_counter() - t1)
            replies.append(_fake_reply(new, met, pid))
        torch.set_num_threads(int(cfg.server_threads))
        _prime(strategy, arrays)
        t2 = time.perf_counter()
        agg, _ = strategy.aggregate_train(rnd, replies)
        agg_times.append(time.perf_counter() - t2)
        arrays = agg.to_numpy_ndarrays() if agg is not None else arrays
        per_round.append(time.perf_counter() - t0)
    return {"round_s": per_round, "aggregate_s": agg_times, "client_s": client_times}


def aggregation(cfg, entry, repeats: int = 10) -> dict:
    """GC vs DGC aggregation time on the same replies (interleaved)."""
    from omegaconf import OmegaConf

    from strategies.factory import build_strategy

    from fl_mdisc.burnin import load_model
    from fl_mdisc.data import to_float
    from fl_mdisc.experiment import make_plan
    from fl_mdisc.md import ProbeMD
    from fl_mdisc.models import get_params

    torch.set_num_threads(int(cfg.server_threads))
    plan = make_plan(cfg)
    model = load_model(cfg, entry["start"], entry["start_sha"])
    theta = get_params(model)
    rng = np.random.default_rng(0)
    ups = [[t + rng.normal(0, 0.01, t.shape).astype(t.dtype) for t in theta] for _ in range(int(cfg.fed.num_clients))]
    hist = load_model(cfg, entry["hist"], entry["hist_sha"])
    px = to_float(plan.ds.x_train[plan.split.probe[: int(cfg.strategy.probe_size)]])
    chains = {}
    for name in ("gc", "dgc"):
        c = OmegaConf.create(OmegaConf.to_container(cfg))
        c.strategy.name = name
        for k, v in (("clip_norm", 1.0), ("mu", 0.5), ("tau", 0.0)):  # timing only: any values do
            if c.strategy.get(k) is None:
                c.strategy[k] = v
        pm = ProbeMD(load_model(cfg, entry["start"], entry["start_sha"]), px, get_params(hist)) if name == "dgc" else None
        chains[name] = build_strategy(c, probe_md=pm)[0]
    ratio, t_gc, t_dgc = [], [], []
    for _ in range(repeats):
        ts = {}
        for name, s in chains.items():
            _prime(s, theta)
            replies = [_fake_reply(u, {"num-examples": 100, "md-client": 0.0}, i) for i, u in enumerate(ups)]
            ts[name] = _time(lambda: s.aggregate_train(1, replies))
        t_gc.append(ts["gc"])
        t_dgc.append(ts["dgc"])
        ratio.append(ts["dgc"] / ts["gc"])
    return {"dgc_over_gc_aggregation_only": _stats(ratio), "gc_aggregate_s": _stats(t_gc), "dgc_aggregate_s": _stats(t_dgc)}


class RssSampler(threading.Thread):
    """Peak of the summed RSS of this process and of every process below the project's SuperLink (ps, every 0.5 s)."""

    def __init__(self, home: str):
        super().__init__(daemon=True)
        self.home, self.peak, self.stop_flag = home, 0.0, False

    def sample(self) -> float:
        import subprocess

        out = subprocess.run(["ps", "-ww", "-eo", "pid,ppid,rss,args"], capture_output=True, text=True).stdout
        rows = []
        for line in out.splitlines()[1:]:
            parts = line.split(None, 3)
            if len(parts) == 4:
                rows.append((int(parts[0]), int(parts[1]), int(parts[2]), parts[3]))
        kids: dict[int, list] = {}
        for pid, ppid, _r, _a in rows:
            kids.setdefault(ppid, []).append(pid)
        rss = {pid: r for pid, _pp, r, _a in rows}
        todo = [pid for pid, _pp, _r, a in rows if self.home in a and "flower-superlink" in a] + [os.getpid()]
        seen = set()
        while todo:
            pid = todo.pop()
            if pid not in seen:
                seen.add(pid)
                todo.extend(kids.get(pid, []))
        return sum(rss.get(p, 0) for p in seen) / 1024.0

    def run(self):
        while not self.stop_flag:
            try:
                self.peak = max(self.peak, self.sample())
            except (OSError, ValueError):
                pass
            time.sleep(0.5)


def flwr_rounds(cfg, overrides: list[str], out: Path) -> dict:
    """A real `flwr run` of the config; rounds' wall time from timing.jsonl, the rest is start-up/teardown."""
    from fl_mdisc.config import ray_address

    from .runner import gpus_per_client, prepare, project_dir
    from .launch import flwr_env, run_flwr
    from .report import read_jsonl

    c, path = prepare(overrides + [f"out_dir={out}", "resume=false"])
    sampler = RssSampler(flwr_env(project_dir())["FLWR_HOME"])  # the parent of every run's private home
    sampler.start()
    t0 = time.time()
    status = run_flwr(project_dir(), path, int(c.fed.num_clients), int(c.client_threads), gpus_per_client(c),
                      c.data_root, stream=False, ray_address=ray_address(c), engine=str(c.engine))
    wall = time.time() - t0
    sampler.stop_flag = True
    sampler.join()
    timing = read_jsonl(out / "timing.jsonl")
    rounds_s = [t["seconds"] for t in timing]
    steady = timing[1:]
    # where a steady round goes: the wait before a client's work starts (push -> reply created, less its work), the
    # attacker's own work, and the rest of the round after the last reply was created (pulls, aggregation)
    waits = [statistics.median(t["replied_at"][p] - t["clients"][p] for p in t["clients"]) for t in steady]
    slowest = [t["seconds"] - max(t["replied_at"].values()) for t in steady]
    mal = str(int(c.fed.num_clients) - 1)
    summ = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {}
    return {"status": status.get("status"), "wall_s": round(wall, 2), "round_s": rounds_s,
            "startup_s": round(wall - sum(rounds_s), 2), "peak_rss_mb": round(sampler.peak, 1),
            "summary_wall_s": summ.get("wall_s"), "wait_before_work_s": _stats(waits),
            "attacker_work_s": _stats([t["clients"][mal] for t in steady if mal in t["clients"]]),
            "after_last_reply_s": _stats(slowest)}


def bench(overrides: list[str]) -> dict:
    from fl_mdisc.burnin import ensure_burnin
    from .runner import prepare

    cfg, _ = prepare(overrides + ["trigger=false"], tag="bench")
    out = Path(cfg.out_dir)
    rounds = int(cfg.num_rounds)
    if rounds < 2:
        raise ConfigError(f"bench needs num_rounds >= 2 (round 1 of a flwr run also starts the actors); got {rounds}")
    torch.set_num_threads(int(cfg.server_threads))
    entry = ensure_burnin(cfg, log=lambda m: print(f"fl-mdisc: {m}", flush=True))
    from fl_mdisc.calibration import apply_calibration

    apply_calibration(cfg, entry, log=lambda m: print(f"fl-mdisc: {m}", flush=True))  # C / DGC threshold as a run
    res = {"machine": {"cores": os.cpu_count(), "torch_threads_client": int(cfg.client_threads),
                       "torch_threads_server": int(cfg.server_threads), "torch": torch.__version__},
           "config": {"preset": cfg.preset_name, "model": cfg.model.name, "clients": int(cfg.fed.num_clients),
                      "rounds": rounds, "strategy": cfg.strategy.name, "attack": cfg.attack.name}}
    print("bench: DSC/AT vs ST per batch ...", flush=True)
    from fl_mdisc.config import compose, resolve_paths

    dsc_cfg = compose(overrides + ["trigger=false", "defense=dsc"])  # DSC's threshold settings
    resolve_paths(dsc_cfg)
    res.update(micro(dsc_cfg, entry))
    print("bench: GC vs DGC aggregation ...", flush=True)
    res.update(aggregation(cfg, entry))
    print(f"bench: {rounds} rounds in-process ...", flush=True)
    inproc = inprocess_rounds(cfg, entry, rounds)
    print(f"bench: {rounds} rounds through flwr run (Ray) ...", flush=True)
    base = [o for o in overrides if not o.startswith("out_dir=")] + ["trigger=false", f"eval_every={rounds}"]
    fl = flwr_rounds(cfg, base, out / "flwr-default")
    print("bench: 10 clients through flwr run (peak memory) ...", flush=True)
    fl10 = flwr_rounds(cfg, base + ["fed.num_clients=10", "num_rounds=5", "eval_every=5"], out / "flwr-10clients")
    print(f"bench: {rounds} rounds on the Deployment Engine ({int(cfg.fed.num_clients)} SuperNodes on loopback) ...", flush=True)
    dep = flwr_rounds(cfg, base + ["engine=deployment"], out / "deployment")
    print(f"bench: the same with Flower's default ClientApp process (a fresh interpreter per message) ...", flush=True)
    cold = flwr_rounds(cfg, base + ["engine=deployment", "deployment.clientapp=subprocess"], out / "deployment-subprocess")
    hon, mal = inproc["client_s"]["honest"], inproc["client_s"]["malicious"]
    round_gc_est = inproc["round_s"]
    agg = res["dgc_aggregate_s"]["median"] - res["gc_aggregate_s"]["median"]
    whole = [r / (r - agg) for r in round_gc_est] if cfg.strategy.name == "dgc" else [(r + agg) / r for r in round_gc_est]
    res.update({
        "dgc_over_gc": _stats(whole),
        "inprocess_round_s": _stats(inproc["round_s"]),
        "flwr_round_s": _stats(fl["round_s"]),
        # Round 1 of a flwr run also starts the Ray actors (imports, data and checkpoint caches): a one-off cost
        # reported as flwr_first_round_extra_s; the ratio compares the steady rounds 2..R of both loops.
        "flwr_over_inprocess": round(sum(fl["round_s"][1:]) / sum(inproc["round_s"][1:]), 4),
        "flwr_over_inprocess_all_rounds": round(sum(fl["round_s"]) / sum(inproc["round_s"]), 4),
        "flwr_first_round_extra_s": round(fl["round_s"][0] - statistics.median(fl["round_s"][1:]), 2),
        "flwr_startup_s": fl["startup_s"],
        # the same rounds on a SuperLink and one SuperNode per client (TLS, registered keys, forked ClientApps)
        "deployment_round_s": _stats(dep["round_s"][1:]),
        "deployment_over_simulation": round(sum(dep["round_s"][1:]) / sum(fl["round_s"][1:]), 4),
        "deployment_startup_s": dep["startup_s"],
        "deployment_subprocess_round_s": _stats(cold["round_s"][1:]),
        "deployment_subprocess_over_simulation": round(sum(cold["round_s"][1:]) / sum(fl["round_s"][1:]), 4),
        "round_parts_s": {k: {"simulation": fl[k], "deployment": dep[k], "deployment_subprocess": cold[k]}
                          for k in ("wait_before_work_s", "attacker_work_s", "after_last_reply_s")},
        "peak_rss_mb": {"default": fl["peak_rss_mb"], "10_clients": fl10["peak_rss_mb"]},
        "attack_round_s": _stats(mal) if mal else None,
        "honest_round_s": _stats(hon),
        "attack_over_honest": round(statistics.median(mal) / statistics.median(hon), 2) if mal else None,
        "paper_table5_s_per_batch": {"ST": 0.0206, "GC": 0.0253, "AT": 0.3735, "DSC": 0.3241, "DSC/ST": 15.7},
    })
    (out / "bench.json").write_text(json.dumps(res, indent=1))
    (out / "bench.md").write_text(bench_markdown(res))
    print((out / "bench.md").read_text())
    return res


def bench_markdown(r: dict) -> str:
    def s(x):
        return f"{x['median']:.3g} (min {x['min']:.3g}, max {x['max']:.3g})" if isinstance(x, dict) else str(x)

    rows = [
        ("DSC / ST per batch, clean stream", s(r["dsc_over_st_clean"]), "≤ 3", "15.7 (0.3241 / 0.0206 s)"),
        ("DSC / ST per batch, poisoned stream", s(r["dsc_over_st_poisoned"]), "≤ 6", "–"),
        ("AT / ST per batch", s(r["at_over_st"]), "–", "18.1 (0.3735 / 0.0206 s)"),
        ("DGC / GC, whole round (clients included)", s(r["dgc_over_gc"]), "≤ 1.3", "–"),
        ("DGC / GC, aggregation only", s(r["dgc_over_gc_aggregation_only"]), "report", "–"),
        ("flwr run (Ray) / in-process, rounds 2..R", f"{r['flwr_over_inprocess']:.3g}", "≤ 1.25", "–"),
        ("flwr run (Ray) / in-process, all rounds", f"{r.get('flwr_over_inprocess_all_rounds', float('nan')):.3g}", "report", "–"),
        ("Deployment Engine / simulation (Ray), rounds 2..R", f"{r['deployment_over_simulation']:.3g}"
         if "deployment_over_simulation" in r else "–", "≤ 2", "–"),
        ("Deployment Engine, Flower's fresh ClientApp interpreter per message / simulation, rounds 2..R",
         f"{r['deployment_subprocess_over_simulation']:.3g}" if "deployment_subprocess_over_simulation" in r else "–",
         "report", "–"),
        ("steady round (s): simulation / Deployment Engine / the same with fresh interpreters",
         f"{r['flwr_round_s']['median']:.3g} / {r['deployment_round_s']['median']:.3g} / "
         f"{r['deployment_subprocess_round_s']['median']:.3g}" if "deployment_subprocess_round_s" in r else "–",
         "report", "–"),
        *[(f"{label}, median over rounds 2..R (s): simulation / Deployment Engine / fresh interpreters",
           " / ".join(f"{r['round_parts_s'][k][e]['median']:.3g}" for e in ("simulation", "deployment", "deployment_subprocess"))
           if "round_parts_s" in r else "–", "report", "–")
          for k, label in (("wait_before_work_s", "a message's wait before its client works (median client)"),
                           ("attacker_work_s", "the attacker's own work"),
                           ("after_last_reply_s", "the round after its last reply was created"))],
        ("flwr start-up + teardown (s); first round's actor warm-up (s)",
         f"{r['flwr_startup_s']:.3g}; {r.get('flwr_first_round_extra_s', '–')}", "report", "–"),
        ("peak RSS, all processes (MB): default / 10 clients",
         f"{r['peak_rss_mb']['default']:.0f} / {r['peak_rss_mb']['10_clients']:.0f}", "report", "–"),
        ("attacker / honest client seconds per round", f"{r['attack_over_honest']}", "report", "–"),
    ]
    m = r["machine"]
    head = (f"Machine: {m['cores']} cores, torch {m['torch']}, {m['torch_threads_client']} thread(s) per client, "
            f"{m['torch_threads_server']} on the server. Config: preset {r['config']['preset']}, {r['config']['model']}, "
            f"{r['config']['clients']} clients, {r['config']['rounds']} rounds, {r['config']['strategy']}/{r['config']['attack']}. "
            f"Median (min, max) over repeats; ST batch {r['st_batch_s_clean']['median'] * 1000:.1f} ms.\n\n")
    table = "| measure | ours | target | paper (Table 5, GPU) |\n|---|---|---|---|\n" + "\n".join(
        f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows)
    return head + table + "\n"
