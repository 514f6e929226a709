"""The ServerApp: burn-in (or cache hit) -> R accumulative rounds -> optional trigger round.

At start the server asks every SuperNode for its partition id (node id -> partition id, used to sample and to
bind replies to their senders). Data flow per round: K of N partitions drawn from (seed, round)
(fl_mdisc/sampling.py) -> config + global model -> those clients (stream batch -> optional correction -> update) ->
strategy chain ServerSGD(ReplyValidator([GC|DGC](SampledParticipation(aggregator)))) -> new global model -> centralised test
accuracy every ``eval_every`` rounds on the full test set. Outputs in ``out_dir``: ``config.yaml`` (resolved),
``metrics.jsonl`` (one object per evaluated round: ``round``, ``accuracy`` in percent, ...),
``rounds.jsonl`` (per round: who was sampled, per-client norm/MD/bound/flag, DSC counts, drops, failures),
``calibration.json`` (burn-in and thresholds in force), ``checkpoint.pt`` (resume) and ``summary.json``.
"""

from __future__ import annotations

import json
import os
import time
from logging import INFO
from pathlib import Path

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.common import log
from flwr.serverapp import Grid, ServerApp
from omegaconf import OmegaConf

from fl_mdisc.burnin import ensure_burnin, estimate_dsc_threshold, load_model
from fl_mdisc.calibration import apply_calibration
from fl_mdisc.config import load_run_config, resolve_paths, to_json
from fl_mdisc.data import to_float
from fl_mdisc.errors import ConfigError, FlMdiscError
from fl_mdisc.experiment import make_plan
from fl_mdisc.md import ProbeMD
from fl_mdisc.sampling import clients_per_round
from fl_mdisc.models import get_params
from fl_mdisc.train import evaluate, pick_device

from . import checkpoint
from .factory import build_strategy
from .sampling import NODE_MAP_ENV, learn_partition_ids, registered_partition_ids, send_and_receive

app = ServerApp()


def _say(text: str) -> None:
    log(INFO, "[fl-mdisc] %s", text)


def wait_for_nodes(grid: Grid, n: int, timeout: float = 120.0) -> list[int]:
    """Wait until exactly ``n`` SuperNodes are connected; fail clearly instead of hanging forever."""
    t0, last, stable_since = time.time(), -1, time.time()
    while True:
        ids = sorted(grid.get_node_ids())
        if len(ids) != last:
            last, stable_since = len(ids), time.time()
        if len(ids) == n and time.time() - stable_since > 1.0:
            return ids
        if len(ids) > n and time.time() - stable_since > 2.0:
            break
        if time.time() - t0 > timeout:
            break
        time.sleep(0.5)
    raise ConfigError(f"the federation has {last} SuperNodes but fed.num_clients={n}; run with "
                      f"--federation-config \"num-supernodes={n}\" (fl-mdisc run does this for you)")


class Recorder:
    """Append-only JSON-lines files; on resume, lines after the checkpoint round are dropped first (and a last line
    cut short by a process killed while writing it)."""

    def __init__(self, path: Path, keep_until: int | None) -> None:
        self.path = path
        if keep_until is not None and path.exists():
            lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
            if lines and not lines[-1].endswith("}"):
                lines.pop()
            kept = [ln for ln in lines if json.loads(ln)["round"] <= keep_until]
            path.write_text("".join(ln + "\n" for ln in kept))
        elif keep_until is None and path.exists():
            path.unlink()

    def write(self, obj: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(obj, sort_keys=True) + "\n")

    def rows(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(ln) for ln in self.path.read_text().splitlines() if ln.strip()]


@app.main()
def main(grid: Grid, context: Context) -> None:
    try:
        run_many(grid, context.run_config)
    except FlMdiscError as exc:
        log(INFO, "[fl-mdisc] ERROR: %s", exc)
        raise RuntimeError(f"fl-mdisc: {exc}") from None


def run_many(grid: Grid, run_config: dict) -> list[dict]:
    """``config-files`` (";"-joined): run the cells one after the other on this federation, skipping those whose
    ``summary.json`` exists (the sweep commands group the cells of one federation size this way, which saves a
    SuperLink + Ray start-up per cell; clients are stateless, so every cell gives the numbers it gives alone).
    Otherwise one run of ``config-file`` or ``overrides``."""
    paths = [p for p in str(run_config.get("config-files", "") or "").split(";") if p]
    if not paths:
        return [run(grid, run_config)]
    out = []
    for i, path in enumerate(paths, 1):
        done = Path(path).parent / "summary.json"
        if done.is_file():
            continue
        _say(f"cell {i}/{len(paths)}: {path}")
        out.append(run(grid, {"config-file": path}))
    return out


def run(grid: Grid, run_config: dict) -> dict:
    """One run: prepare the federation's inputs (:func:`prepare`), build the defences (:func:`build_server`), resume
    from ``checkpoint.pt`` when asked (:mod:`strategies.checkpoint`), then the round loop (:class:`RoundLoop`)."""
    t_start = time.time()
    cfg = load_run_config(dict(run_config))
    resolve_paths(cfg)
    if cfg.out_dir is None:
        cfg.out_dir = str(Path(cfg.cache_dir).parent.parent / "outputs" / time.strftime("run-%Y%m%d-%H%M%S"))
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(int(cfg.server_threads))
    dev = pick_device(cfg)
    _say(f"output folder: {out}")
    plan, entry, dsc = prepare(cfg, out)
    model, strategy, clip, validator = build_server(cfg, entry, plan, dev)
    fresh = ArrayRecord(get_params(model))
    state = checkpoint.restore(out / "checkpoint.pt", strategy, clip, cfg, fresh) if cfg.resume else \
        checkpoint.Resumed(fresh)
    if state.last_round is not None:
        _say(f"resuming from round {state.last_round} ({out / 'checkpoint.pt'})")
    loop = RoundLoop(cfg, out, grid, plan, entry, dev, model, strategy, clip, validator, state, dsc)
    loop.t_start = t_start
    result = loop.run()
    if result is not None:
        return result
    summary = summarize(loop.metrics.rows(), loop.rounds.rows(), cfg)
    summary["wall_s"] = round(time.time() - t_start, 1)
    summary["startup_s"] = round(loop.t_rounds - t_start, 2)  # this cell's start to its first round (incl. round 0)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    _say("summary: " + json.dumps({k: v for k, v in summary.items() if k != "detection"}))
    _say(f"results in {out}")
    return summary


def prepare(cfg, out: Path):
    """Data plan, burn-in (or cache hit), DSC's threshold and the server's calibration; writes ``config.yaml`` and
    ``calibration.json``. Returns (plan, burn-in entry, (DSC mu, DSC tau))."""
    plan = make_plan(cfg)  # loads data: missing files fail here, before any training
    entry = ensure_burnin(cfg, log=_say)
    calib = {"burnin": {k: entry["meta"][k] for k in ("hist_accuracy", "start_accuracy", "seconds")},
             "burnin_dir": entry["dir"]}
    dsc_mu = dsc_tau = 0.0
    if cfg.defense.name == "dsc":
        if cfg.defense.mu is None or cfg.defense.tau is None:
            est = estimate_dsc_threshold(cfg, entry, log=_say)
            dsc_mu = est["mu"] if cfg.defense.mu is None else float(cfg.defense.mu)
            dsc_tau = est["tau"] if cfg.defense.tau is None else float(cfg.defense.tau)
            calib["dsc_estimate"] = est
        else:
            dsc_mu, dsc_tau = float(cfg.defense.mu), float(cfg.defense.tau)
        calib["dsc"] = {"mu": dsc_mu, "tau": dsc_tau}
    fit = apply_calibration(cfg, entry, log=_say)  # null C / mu / tau: computed here, from this machine's burn-in
    if fit is not None:
        calib["server_fit"] = {k: v for k, v in fit.items() if k != "values"}
    source = "explicit (config)" if fit is None else "fitted (calibration.py)"
    if cfg.strategy.name == "dgc":
        calib["dgc"] = {"clip_norm": cfg.strategy.clip_norm, "mu": cfg.strategy.mu, "tau": cfg.strategy.tau,
                        "statistic": "increase",
                        "source": "explicit (config)" if fit is None or "mu" not in fit else source}
    elif cfg.strategy.name == "byzfl" and fit is not None:
        calib["byzfl"] = {"clip_norm": cfg.strategy.clip_norm, "source": source}
    elif cfg.strategy.name == "gc":
        calib["gc"] = {"clip_norm": cfg.strategy.clip_norm, "source": source}
    (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    (out / "calibration.json").write_text(json.dumps(calib, indent=1))
    return plan, entry, (float(dsc_mu), float(dsc_tau))


def build_server(cfg, entry, plan, dev):
    """The global model at theta_start and the strategy chain, DGC's probe on the server's own data included.
    Returns (model, outer strategy, defence wrapper or None, reply validator)."""
    model = load_model(cfg, entry["start"], entry["start_sha"], dev)
    probe_md = None
    if cfg.strategy.name == "dgc":
        hist_model = load_model(cfg, entry["hist"], entry["hist_sha"], dev)
        probe_x = to_float(plan.ds.x_train[plan.split.probe[: int(cfg.strategy.probe_size)]]).to(dev)
        probe_md = ProbeMD(load_model(cfg, entry["start"], entry["start_sha"], dev), probe_x, get_params(hist_model))
    strategy, clip, validator = build_strategy(cfg, probe_md=probe_md, malicious=plan.malicious)
    if cfg.strategy.name in ("multikrum", "byzfl"):
        from .factory import defence_f

        _say("{} runs with f = {} per round ({})".format(cfg.strategy.name, *defence_f(cfg)))
    return model, strategy, clip, validator


TIMEOUT_WARMUP_ROUNDS, TIMEOUT_FLOOR_S, TIMEOUT_WINDOW = 3, 60.0, 10


def round_timeout(complete: list[float], ceiling: float, multiple: float | None) -> float:
    """Seconds a round waits for its replies, from the seconds of the rounds before it where every sampled client
    replied: ``ceiling`` (``fed.round_timeout``) until 3 such rounds are measured (start-up, caches) or with
    ``multiple`` None; then ``min(ceiling, max(60, multiple x the slowest of the last 10))``, so that a hung node
    costs a small multiple of a normal round, not the ceiling. The floor keeps a machine's load spike from cutting a
    healthy reply; a reply cut all the same is counted as ``missing``.

    >>> round_timeout([2.0, 3.0], 600, 5.0), round_timeout([2.0, 3.0, 20.0], 600, 5.0), round_timeout([1.0] * 5, 600, None)
    (600, 100.0, 600)
    """
    if multiple is None or len(complete) < TIMEOUT_WARMUP_ROUNDS:
        return ceiling
    return min(ceiling, max(TIMEOUT_FLOOR_S, float(multiple) * max(complete[-TIMEOUT_WINDOW:])))


class RoundLoop:
    """The rounds of one run: R accumulate rounds (or until the monitor fires), then the trigger round when asked;
    evaluation every ``eval_every`` rounds, a checkpoint every ``checkpoint_every``. Writes ``metrics.jsonl``,
    ``rounds.jsonl`` and ``timing.jsonl`` (cut back to the checkpoint's round on resume)."""

    def __init__(self, cfg, out, grid, plan, entry, dev, model, strategy, clip, validator, state, dsc) -> None:
        self.cfg, self.out, self.grid, self.plan, self.entry, self.dev = cfg, out, grid, plan, entry, dev
        self.model, self.strategy, self.clip, self.validator, self.state = model, strategy, clip, validator, state
        keep = state.last_round
        self.metrics = Recorder(out / "metrics.jsonl", keep)
        self.rounds = Recorder(out / "rounds.jsonl", keep)
        self.timing = Recorder(out / "timing.jsonl", keep)
        self.base_conf = {"cfg-json": to_json(cfg), "start-path": entry["start"], "start-sha": entry["start_sha"],
                          "hist-path": entry["hist"], "hist-sha": entry["hist_sha"], "dsc-mu": dsc[0],
                          "dsc-tau": dsc[1]}
        self.R = int(cfg.num_rounds)
        self.total = self.R + (1 if cfg.trigger else 0)
        self.t_start = self.t_rounds = time.time()
        self.complete_s: list[float] = []  # seconds of this process's rounds where every sampled client replied

    def connect(self) -> None:
        """Wait for the N SuperNodes and learn which partition each one holds."""
        n = int(self.cfg.fed.num_clients)
        node_ids = wait_for_nodes(self.grid, n)
        t_map = time.time()
        if os.environ.get(NODE_MAP_ENV):  # the Deployment Engine: partitions bound to the registered keys
            node_to_pid = registered_partition_ids(os.environ[NODE_MAP_ENV], node_ids, n)
        else:
            node_to_pid = learn_partition_ids(self.grid, node_ids, n, timeout=float(self.cfg.fed.round_timeout))
        self.strategy.sampler.set_nodes(node_to_pid)
        self.validator.node_to_pid = node_to_pid
        _say(f"{n} SuperNodes mapped to their partition ids in {time.time() - t_map:.1f}s; "
             f"{clients_per_round(self.cfg)} of {n} clients per round")

    def evaluate_at(self, rnd: int, arr: ArrayRecord, phase: str) -> dict:
        from fl_mdisc.models import set_params

        set_params(self.model, arr.to_numpy_ndarrays())
        acc, loss = evaluate(self.model, self.plan.ds.x_test, self.plan.ds.y_test, device=self.dev)
        row = {"round": rnd, "accuracy": round(acc, 4), "test_loss": round(loss, 6), "phase": phase}
        self.metrics.write(row)  # deterministic content only: same config + seed -> bit-identical file
        return row

    def run(self) -> dict | None:
        """Play the rounds; None when the run is complete, ``{"stopped_after": r}`` at ``stop_after``."""
        self.connect()
        st = self.state
        if st.next_round == 1:
            arrays = st.arrays
            row = start_evaluation(self.entry, self.cfg, self.dev, self.plan.ds,
                                   lambda: self.evaluate_at(0, arrays, "start"), self.metrics)
            _say(f"round 0: test accuracy {row['accuracy']:.2f}%")
        if st.done:
            _say("this output folder already holds a complete run; summarising it")
        self.start_acc = self.metrics.rows()[0]["accuracy"]
        self.t_rounds = time.time()
        rnd = st.next_round
        while not st.done:
            self.play(rnd)
            stop = self.cfg.stop_after is not None and rnd == int(self.cfg.stop_after)
            if rnd % int(self.cfg.checkpoint_every) == 0 or st.done or stop:
                checkpoint.save(self.out / "checkpoint.pt", rnd, st.arrays, self.strategy, self.clip, self.cfg,
                                st.monitor_round, st.done)
            if stop and not st.done:
                _say(f"stopping after round {rnd} (stop_after); rerun the same command to resume")
                return {"stopped_after": rnd}
            rnd += 1
        return None

    def play(self, rnd: int) -> None:
        """One round: sample, send, aggregate, log; evaluate when due; update the monitor and ``done``."""
        cfg, st, strategy = self.cfg, self.state, self.strategy
        accumulate = rnd <= self.R and st.monitor_round is None
        phase = "accumulate" if accumulate else "trigger"
        t0 = time.time()
        msgs = strategy.configure_train(rnd, st.arrays, ConfigRecord({**self.base_conf, "phase": phase}), self.grid)
        timeout = round_timeout(self.complete_s, float(cfg.fed.round_timeout), cfg.fed.round_timeout_multiple)
        t_push = time.time()
        replies = send_and_receive(self.grid, msgs, timeout)
        failures = [m for m in replies if m.has_error()]
        new_arrays, _ = strategy.aggregate_train(rnd, replies)
        if new_arrays is not None:
            st.arrays = new_arrays
        else:
            _say(f"round {rnd}: no valid reply; the global model is unchanged")
        row = _round_row(rnd, phase, replies, self.clip, self.validator, self.plan, failures, new_arrays is None)
        row["sampled"] = list(strategy.sampler.sampled)
        if strategy.sampler.unavailable:  # drawn, but their node was not online: not sent (rows without any as before)
            row["unavailable"] = list(strategy.sampler.unavailable)
        row["missing"] = len(strategy.sampler.sampled) - len(replies)  # timed out: no reply at all
        self.rounds.write(row)
        seconds = time.time() - t0
        if row["missing"] == 0 and not failures:
            self.complete_s.append(seconds)
        self.timing.write({"round": rnd, "seconds": round(seconds, 3), "timeout": round(timeout, 1),
                           "clients": _client_seconds(replies), "replied_at": _client_seconds(replies, t_push)})
        drop = cfg.get("monitor_drop")
        due = not accumulate or rnd % int(cfg.eval_every) == 0 or rnd == self.R
        if due or drop is not None:
            row = self.evaluate_at(rnd, st.arrays, phase)
            if due:
                eta = (time.time() - self.t_rounds) / max(1, rnd - st.next_round + 1) * (self.total - rnd)
                _say(f"round {rnd}/{self.total} ({phase}): test accuracy {row['accuracy']:.2f}%  "
                     f"[{time.time() - self.t_start:.0f}s elapsed, ETA {max(0.0, eta):.0f}s]")
            if accumulate and drop is not None and row["accuracy"] < self.start_acc - float(drop):
                st.monitor_round = rnd
                _say(f"monitor fired at round {rnd}: accuracy {row['accuracy']:.2f}% < start "
                     f"{self.start_acc:.2f}% - {drop}")
        if not accumulate or ((rnd == self.R or st.monitor_round is not None) and not cfg.trigger):
            st.done = True


# what the attackers report about themselves (logged per round; the server never acts on it)
ATTACK_LOG_KEYS = ("attack-norm", "attack-ref-norm", "attack-val-drop", "attack-paused", "attack-scale",
                   "attack-md-est", "attack-md-budget", "attack-md-ref")


def start_evaluation(entry: dict, cfg, dev, ds, compute, metrics_rec) -> dict:
    """Round 0's evaluation (theta_start on the test set), computed once per burn-in and device kind and reused by
    every later run from that checkpoint (the cells of a table or grid share it; ~3 s each on this CPU). The cache
    file sits beside the checkpoint; a damaged or foreign one is recomputed."""
    import hashlib

    test = hashlib.sha256(np.ascontiguousarray(ds.x_test).tobytes()[:: 997] + np.asarray(ds.y_test).tobytes())
    key = {"start": entry["start_sha"], "dataset": str(cfg.dataset.name), "device": torch.device(dev).type,
           "test": f"{len(ds.y_test)}:{test.hexdigest()}"}
    path = Path(entry["dir"]) / "eval-start.json"
    try:
        cached = json.loads(path.read_text())
        if cached.get("key") == key:
            row = cached["row"]
            metrics_rec.write(row)
            return row
    except (OSError, ValueError, KeyError):
        pass
    row = compute()
    tmp = path.with_suffix(f".{time.time_ns()}.tmp")
    tmp.write_text(json.dumps({"key": key, "row": row}))
    tmp.replace(path)
    return row


def _client_seconds(replies, since: float | None = None) -> dict:
    """Partition id -> the seconds its client reported working, or, with ``since`` (when the round's messages were
    pushed), the seconds from then until its ClientApp created the reply (Flower's ``created_at``; one clock on one
    machine): what the message waited and travelled before the client's work, plus that work."""
    out = {}
    for m in replies:
        if m.has_error() or len(m.content.metric_records) != 1:
            continue
        met = next(iter(m.content.metric_records.values()))
        if "seconds" in met and "partition-id" in met:
            v = float(met["seconds"]) if since is None else float(m.metadata.created_at) - since
            out[str(int(met["partition-id"]))] = round(v, 3)
    return out


def _round_row(rnd, phase, replies, clip, validator, plan, failures, unchanged) -> dict:
    clients = {}
    for m in replies:
        if m.has_error() or len(m.content.metric_records) != 1:
            continue
        met = next(iter(m.content.metric_records.values()))
        pid = int(met.get("partition-id", -1))
        if validator.node_to_pid is not None:  # log under the sender's own partition, whatever it claims
            pid = validator.node_to_pid.get(int(m.metadata.src_node_id), pid)
        clients[pid] = {"partition-id": pid, "malicious": pid in plan.malicious,
                        **{k: met[k] for k in met.keys()
                           if k in ("md-client", "dsc-corrected", "dsc-steps", "poisoned", "train-loss", "attack-norm",
                                    "attack-ref-norm")
                           or k.startswith("md-clean") or k.startswith("md-in")}}
    for pid, extra in getattr(validator, "extra_metrics", {}).items():
        if pid in clients:
            clients[pid].update({k: extra[k] for k in ATTACK_LOG_KEYS if k in extra})
    for e in (clip.client_log if clip is not None else []):
        clients.setdefault(e["partition-id"], {"partition-id": e["partition-id"]}).update(
            {k: (round(v, 8) if isinstance(v, float) else v) for k, v in e.items()})
    row = {"round": rnd, "phase": phase, "clients": [clients[k] for k in sorted(clients)],
           "dropped": validator.dropped, "failures": len(failures), "unchanged": bool(unchanged)}
    if validator.failed:  # who failed and why (a round without failures keeps the row as before)
        row["failed"] = validator.failed
    return row


def summarize(metrics: list[dict], rounds: list[dict], cfg) -> dict:
    from fl_mdisc.md import auroc

    acc = {r["round"]: r["accuracy"] for r in metrics if r["phase"] != "trigger"}
    trig = [r for r in metrics if r["phase"] == "trigger"]
    R = max(acc) if acc else 0  # last accumulate round (num_rounds, or where the monitor fired)
    s = {"strategy": cfg.strategy.name, "attack": cfg.attack.name, "defense": cfg.defense.name,
         "protocol": cfg.protocol, "preset": cfg.get("preset_name"), "seed": int(cfg.seed),
         "dataset": str(cfg.dataset.name), "num_classes": int(cfg.dataset.num_classes),
         "accuracy_start": acc.get(0), "accuracy_final": acc.get(R),
         "mean_accuracy": round(float(np.mean([v for k, v in acc.items() if 1 <= k <= R])), 4) if any(1 <= k <= R for k in acc) else None,
         "dropped_replies": sum(len(r["dropped"]) for r in rounds), "failures": sum(r["failures"] for r in rounds),
         "spoofed_replies": sum(1 for r in rounds for d in r["dropped"] if d.get("spoofed")),
         "missing_replies": sum(r.get("missing", 0) for r in rounds),
         "unchanged_rounds": sum(1 for r in rounds if r.get("unchanged"))}
    s["last_round"] = R
    from fl_mdisc.assumption import assumed_f

    from .factory import defence_f

    s["assumed_f"] = assumed_f(cfg)  # what the server was told (null: nothing); the truth is never a defence's input
    if cfg.strategy.name in ("multikrum", "byzfl"):
        s["defence_f"], s["defence_f_source"] = defence_f(cfg)
    if cfg.get("monitor_drop") is not None:
        s["monitor_round"] = R if R < int(cfg.num_rounds) else None
    if trig:
        s["accuracy_after_trigger"] = trig[-1]["accuracy"]
        s["trigger_drop"] = round(acc[R] - trig[-1]["accuracy"], 4)
    from fl_mdisc.scoring import detection

    mal = [c.get("stat", c["md"]) for r in rounds if r.get("phase") == "accumulate" for c in r["clients"]
           if "md" in c and c.get("malicious")]
    hon = [c.get("stat", c["md"]) for r in rounds if r.get("phase") == "accumulate" for c in r["clients"]
           if "md" in c and not c.get("malicious")]
    det = detection(rounds)
    if det is not None or mal or hon:
        s["detection"] = (det or {}) | {"auroc": auroc(mal, hon) if mal and hon else None}
    dsc = [c.get("dsc-corrected", 0) for r in rounds for c in r["clients"]]
    if cfg.defense.name in ("dsc", "at"):
        s["dsc_corrected_samples"] = int(sum(dsc))
    return s
