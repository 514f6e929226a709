"""A SuperNode that dies and comes back, on the Deployment Engine (issue 28), measured end to end.

    .venv/bin/python benchmarks/deployment_faults.py OUT_DIR [--markdown OUT.md]

Runs ``fl-mdisc run engine=deployment`` on generated data (3 SuperNodes, GC, the lambda-update attacker, 9 rounds),
kills SuperNode 1 (its whole process tree, SIGTERM then SIGKILL) once round 2 is logged, restarts it with the same
command, key and home once the server logs its partition as ``unavailable``, and reports per round who was drawn,
who replied, who failed and why, who was skipped, the round's seconds and its wait (``timing.jsonl``). What it
shows: the failure is logged once under the right partition, the dead node is skipped while the SuperLink does not
list it, the others keep their draw, the restarted node rejoins under its registered node id as the same partition,
and nothing of the run is left behind. About a minute on 2 cores.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from _report import emit, folder_args

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from app.launch import _process_table, kill_trees  # noqa: E402


def _data(root: Path) -> None:
    """A CIFAR-shaped npz dataset with class-dependent means (as the tests' tiny data)."""
    (root / "cifar10").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for part, n in (("train", 1600), ("test", 300)):
        y = rng.integers(0, 10, n)
        x = np.clip((y[:, None, None, None] * 23 % 256) + rng.normal(0, 40, (n, 32, 32, 3)), 0, 255).astype(np.uint8)
        np.savez_compressed(root / "cifar10" / f"{part}.npz", x=x, y=y.astype(np.int64))


def _proc(pid: int) -> tuple[int, list[str], str, dict]:
    """pid, command line, working folder and environment of a running process (to restart it as it was)."""
    cmd = [a for a in Path(f"/proc/{pid}/cmdline").read_text().split("\0") if a]
    env = dict(x.split("=", 1) for x in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in x)
    return pid, cmd, str(Path(f"/proc/{pid}/cwd").resolve()), env


def _node(run_pid: int, pid_wanted: str) -> tuple[tuple, tuple] | None:
    """The SuperNode of one partition and the SuperExec the launcher started beside it (``--parent-pid`` = node)."""
    table = _process_table()
    for pid, _ppid, args in table:
        if "flower-supernode" in args and pid_wanted in args and f"run-{run_pid}" in args:
            execs = [p for p, _pp, a in table if "clients.warm_exec" in a and f"--parent-pid {pid}" in a]
            return (_proc(pid), _proc(execs[0])) if execs else None
    return None


def _restart(node: tuple, superexec: tuple) -> list[subprocess.Popen]:
    """Start the node again with its command, key and home, then its SuperExec pointed at the new node."""
    kw = dict(stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    n = subprocess.Popen(node[1], cwd=node[2], env=node[3], **kw)
    cmd = superexec[1][: superexec[1].index("--parent-pid")] + ["--parent-pid", str(n.pid)]
    return [n, subprocess.Popen(cmd, cwd=superexec[2], env=superexec[3], **kw)]


def run_faults(tmp: Path) -> dict:
    """Run the federation in ``tmp``, kill and restart SuperNode 1; return the run's rows, timing, summary, events,
    exit code, seconds and the processes of the run left behind (tests/test_e2e_deployment.py asserts on them)."""
    _data(tmp / "data")
    out = tmp / "run"
    ov = [f"data_root={tmp / 'data'}", f"cache_dir={tmp / 'cache'}", f"out_dir={out}", "model.width=4",
          "split.burnin=1000", "split.probe=500", "split.calib=100", "burnin.epochs=2", "burnin.hist_epoch=1",
          "burnin.batch_size=100", "burnin.calib_steps=3", "fed.num_clients=3", "fed.batch_size=50",
          "++attack.val_size=50", "++attack.trigger_size=50", "engine=deployment", "num_rounds=9", "eval_every=3",
          "checkpoint_every=3", "strategy=gc", "attack=lambda_update", "trigger=false"]
    t0 = time.time()
    run = subprocess.Popen([sys.executable, "-m", "app.cli", "run", "--quiet", *ov], cwd=ROOT,
                           env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    events, saved, again = [], None, None
    while run.poll() is None:
        time.sleep(0.5)
        rows = [json.loads(x) for x in (out / "rounds.jsonl").read_text().splitlines()] if (out / "rounds.jsonl").exists() else []
        if saved is None and len(rows) >= 2 and (saved := _node(run.pid, "partition-id=1 ")):
            kill_trees([saved[0][0]])  # its SuperExec follows it (Flower's parent-process monitor)
            events.append(f"{time.time() - t0:.0f} s: SuperNode 1 killed after round {len(rows)}")
        if saved and again is None and any(1 in r.get("unavailable", []) for r in rows):
            again = _restart(*saved)
            events.append(f"{time.time() - t0:.0f} s: SuperNode 1 restarted with its key after round {len(rows)}")
    if again is not None:
        kill_trees([p.pid for p in again])  # ours, not the launcher's: stopped here
    time.sleep(1)
    left = [x for x in subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True).stdout.splitlines()
            if f"run-{run.pid}" in x]
    read = (lambda name: [json.loads(x) for x in (out / name).read_text().splitlines()])
    return {"rows": read("rounds.jsonl"), "timing": {t["round"]: t for t in read("timing.jsonl")},
            "summary": json.loads((out / "summary.json").read_text()), "events": events, "code": run.returncode,
            "seconds": time.time() - t0, "left": left}


def main() -> None:
    a = folder_args(__doc__, "out")
    r = run_faults(Path(a.out))
    lines = [f"SuperNode 1 killed and restarted during a Deployment Engine run (`benchmarks/deployment_faults.py`): "
             f"exit code {r['code']}, {r['seconds']:.0f} s; " + "; ".join(r["events"]) + ".", "",
             "| round | drawn and sent | replied | failed (partition: reason) | unavailable | seconds | wait (s) |",
             "|---|---|---|---|---|---|---|"]
    for row in r["rows"]:
        t = r["timing"].get(row["round"], {})
        failed = ", ".join(f"{f['partition-id']}: {f['reason'][:48]}…" for f in row.get("failed", [])) or "–"
        lines.append(f"| {row['round']} | {row['sampled']} | {[c['partition-id'] for c in row['clients']]} | {failed} | "
                     f"{row.get('unavailable', '–')} | {t.get('seconds', 0):.1f} | {t.get('timeout', '–')} |")
    s = r["summary"]
    lines += ["", f"Summary: failures {s['failures']}, dropped replies {s['dropped_replies']}, missing replies "
              f"{s['missing_replies']}; processes of the run left behind: {len(r['left'])}."]
    emit(lines, a.markdown)


if __name__ == "__main__":
    main()
