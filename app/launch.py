"""Run one simulation through ``flwr run`` (Flower 1.42 Simulation Runtime on Ray) and check its outcome.

Traps handled here (shared/notes/flower-1.42.md): the SuperLink keeps the environment and working directory
it started with, so it is started by us with the right environment (runtime dependency installation off,
project-local FLWR_HOME) from a neutral directory, and stopped again when the run ends or is interrupted;
``flwr run --stream`` exits 0 on a failed run, so the status comes from ``flwr list --run-id``; the default
federation has 2 SuperNodes, so the size is always passed explicitly.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from fl_mdisc.errors import FlMdiscError


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def flwr_env(project: Path, data_root: str | None = None, private: bool = False) -> dict[str, str]:
    """Environment for the flwr CLI. ``private``: a FLWR_HOME and ports of this invocation alone, so that
    concurrent runs (two sweeps, a test beside a run) never share, or stop, each other's SuperLink."""
    env = dict(os.environ)
    home = Path(env.get("FLWR_HOME") or project / ".flwr-home").resolve()
    if private:
        home = home / f"run-{os.getpid()}"
        env["FLWR_LOCAL_SUPERLINK_HTTP_API_PORT"] = str(_free_port())
        env["FLWR_LOCAL_CONTROL_API_PORT"] = str(_free_port())
    home.mkdir(parents=True, exist_ok=True)
    env.update({
        "FLWR_HOME": str(home),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_TELEMETRY_ENABLED": "0",
        "RAY_DEDUP_LOGS": "0",
        "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
        "PYTHONUNBUFFERED": "1",
        # flwr starts `flower-superlink` etc. by name: they must come from this interpreter's environment
        "PATH": str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", ""),
    })
    if data_root:
        env["FL_MDISC_DATA"] = data_root
    return env


def ray_env(env: dict[str, str], address: str = "local") -> dict[str, str]:
    """Where the simulation's Ray runs. Flower's RayBackend calls ``ray.init`` without an address, so Ray attaches to
    ``RAY_ADDRESS``, else to the cluster of the last ``ray start`` on this machine, else starts its own
    (shared/notes/flower-1.42-scaleout.md). The SuperLink hands its environment down to the simulation, so:
    ``local`` sets ``RAY_ADDRESS=local`` (always a private instance: a stray ``ray start --head`` on a shared box cannot
    capture the run); ``auto`` leaves Ray's own resolution as it is; ``host:port`` attaches to that cluster. No CPU/GPU
    counts are ever passed to ``ray.init`` (Ray refuses them when attaching); the clients' resources still apply."""
    env = dict(env)
    if address == "local":
        env["RAY_ADDRESS"] = "local"
    elif address != "auto":
        env["RAY_ADDRESS"] = address
    return env


def _flwr_bin() -> str:
    cand = Path(sys.executable).with_name("flwr")
    if cand.exists():
        return str(cand)
    found = shutil.which("flwr")
    if not found:
        raise FlMdiscError("the flwr CLI is not installed; run `make setup`")
    return found


def _process_table() -> list[tuple[int, int, str]]:
    try:
        out = subprocess.run(["ps", "-ww", "-eo", "pid,ppid,args"], capture_output=True, text=True).stdout
    except OSError:
        return []
    rows = []
    for line in out.splitlines()[1:]:
        parts = line.split(None, 2)
        if len(parts) == 3:
            rows.append((int(parts[0]), int(parts[1]), parts[2]))
    return rows


def stop_superlink(env: dict[str, str]) -> None:
    """Kill the SuperLink that uses this FLWR_HOME and every process below it (SuperExec, flwr-simulation, and
    the Ray cluster that the simulation started: gcs_server, raylet, workers, actors).

    ``ps -ww``: without it ps cuts the command line at $COLUMNS (pytest sets it), hiding the FLWR_HOME path.
    """
    home = env["FLWR_HOME"]
    table = _process_table()
    roots = [pid for pid, _pp, args in table if home in args and "flower-superlink" in args]
    children: dict[int, list[int]] = {}
    for pid, ppid, _a in table:
        children.setdefault(ppid, []).append(pid)
    doomed, todo = [], list(roots)
    while todo:
        pid = todo.pop()
        doomed.append(pid)
        todo.extend(children.get(pid, []))
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = False
        for pid in doomed:
            try:
                os.kill(pid, sig)
                alive = True
            except ProcessLookupError:
                pass
        if not alive:
            break
        time.sleep(1.0)


def prune_flwr_home(env: dict[str, str]) -> None:
    """Bound disk use: the SuperLink database (runs, logs, FABs) and installed FABs are per-run scratch here.
    (The SuperLink log goes with it; the run's own outputs are in out_dir.)"""
    shutil.rmtree(env["FLWR_HOME"], ignore_errors=True)  # the private home of this invocation


def run_flwr(project: Path, config_file: Path | list[Path], num_clients: int, cpus_per_client: int = 1,
             gpus_per_client: float = 0.0, data_root: str | None = None, stream: bool = True,
             progress=None, ray_address: str = "local") -> dict:
    """Submit the app with ``config-file`` (or, given a list, ``config-files``: several cells of one federation run
    in turn by one ServerApp), follow its log, return the final status from ``flwr list``."""
    env = ray_env(flwr_env(project, data_root, private=True), ray_address)
    flwr = _flwr_bin()
    neutral = env["FLWR_HOME"]
    stop_superlink(env)  # never reuse a SuperLink started with another environment / code
    fed = f"num-supernodes={num_clients} client-resources-num-cpus={cpus_per_client}"
    if gpus_per_client:
        fed += f" client-resources-num-gpus={gpus_per_client}"
    if isinstance(config_file, (list, tuple)):
        if any(";" in str(p) or "'" in str(p) for p in config_file):
            raise FlMdiscError("output folders of a sweep must not contain ';' or quotes")
        rc = "config-files='" + ";".join(str(p) for p in config_file) + "'"
    else:
        rc = f"config-file='{config_file}'"
    cmd = [flwr, "run", str(project), "--run-config", rc,
           "--federation-config", fed, "--format", "json"]
    try:
        sub = subprocess.run(cmd, cwd=neutral, env=env, capture_output=True, text=True, timeout=300)
        try:
            run_id = json.loads(sub.stdout)["run-id"]
        except (ValueError, KeyError):
            raise FlMdiscError(f"flwr run did not start: {(sub.stdout + sub.stderr).strip()[-800:]}") from None
        # Follow the run with one long-lived `flwr log --stream` (an idle gRPC stream) and ask `flwr list` for the
        # status only when it ends. Polling `flwr list` instead costs a whole Python start-up (~1 s of CPU) per
        # call: every 2 s that took a third of a core from the clients and made each round of a 2-core sweep
        # up to 1.7x slower (benchmarks/flwr_poll_cost.py).
        first = True
        while True:
            follower = subprocess.Popen([flwr, "log", str(run_id), "--stream"], cwd=neutral, env=env,
                                        stdout=None if (stream and first) else subprocess.DEVNULL,
                                        stderr=None if (stream and first) else subprocess.DEVNULL)
            first = False
            try:
                while True:
                    try:
                        follower.wait(timeout=15.0 if progress is not None else None)
                        break
                    except subprocess.TimeoutExpired:
                        print(progress(), flush=True)
            finally:
                if follower.poll() is None:
                    follower.kill()
                    follower.wait()
            st = subprocess.run([flwr, "list", "--run-id", str(run_id), "--format", "json"], cwd=neutral, env=env,
                                capture_output=True, text=True)
            try:
                info = json.loads(st.stdout)["runs"][0]
            except (ValueError, KeyError, IndexError):
                raise FlMdiscError(f"cannot read the status of run {run_id}: {st.stdout.strip()[-400:]}") from None
            if str(info.get("status", "")).startswith("finished"):
                return {"run_id": run_id, **info}
            time.sleep(5.0)  # the log stream ended before the run did (a dropped connection): follow it again
    finally:
        stop_superlink(env)  # also on Ctrl-C: never leave a SuperLink or Ray behind
        prune_flwr_home(env)
