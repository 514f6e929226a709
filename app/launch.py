"""Run the app through ``flwr run`` — Flower 1.42's Simulation Runtime on Ray, or its Deployment Engine with a
SuperLink and SuperNodes as processes on loopback — and check its outcome.

Traps handled here (shared/notes/flower-1.42.md): the SuperLink keeps the environment and working directory
it started with, so it is started by us with the right environment (runtime dependency installation off,
project-local FLWR_HOME) from a neutral directory, and stopped again when the run ends or is interrupted;
``flwr run --stream`` exits 0 on a failed run, so the status comes from ``flwr list --run-id``; the default
federation has 2 SuperNodes, so the size is always passed explicitly.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from fl_mdisc.errors import FlMdiscError
from strategies.sampling import NODE_MAP_ENV


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_ACTIVE: dict[str, dict[str, str]] = {}  # FLWR_HOME -> env of every run this process has going (sweep lanes)
_ACTIVE_PROCS: dict[str, list[int]] = {}  # FLWR_HOME -> the Deployment Engine processes a run started
_LANES = itertools.count()


def flwr_env(project: Path, data_root: str | None = None, private: bool = False, lane: bool = False) -> dict[str, str]:
    """Environment for the flwr CLI. ``private``: a FLWR_HOME and ports of this invocation alone, so that
    concurrent runs (two sweeps, a test beside a run) never share, or stop, each other's SuperLink; ``lane``: one of
    several runs of this process at once (``sweep.parallel``), each with its own home."""
    env = dict(os.environ)
    home = Path(env.get("FLWR_HOME") or project / ".flwr-home").resolve()
    if private:
        home = home / (f"run-{os.getpid()}-lane{next(_LANES)}" if lane else f"run-{os.getpid()}")
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


MARK_ENV = "FL_MDISC_FEDERATION"  # set in every process a Deployment Engine run starts; inherited by their children


def marked(value: str) -> list[int]:
    """The processes whose environment has ``FL_MDISC_FEDERATION=value`` (read from /proc; none elsewhere): every
    process below one we started, also one whose parent died first and left it to init (a ServerApp whose
    SuperLink was killed)."""
    want = f"{MARK_ENV}={value}".encode()
    found = []
    for d in Path("/proc").glob("[0-9]*"):
        try:
            if want in (d / "environ").read_bytes().split(b"\0") and int(d.name) != os.getpid():
                found.append(int(d.name))
        except OSError:
            pass
    return found


def kill_trees(roots: list[int]) -> None:
    """SIGTERM, then SIGKILL, each process in ``roots`` and every process below it (children first found from one
    ``ps`` table, so a parent that dies first cannot orphan them out of reach)."""
    table = _process_table()
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


def stop_superlink(env: dict[str, str]) -> None:
    """Kill the SuperLink that uses this FLWR_HOME and every process below it (SuperExec, flwr-simulation, and
    the Ray cluster that the simulation started: gcs_server, raylet, workers, actors).

    ``ps -ww``: without it ps cuts the command line at $COLUMNS (pytest sets it), hiding the FLWR_HOME path.
    """
    home = env["FLWR_HOME"]
    kill_trees([pid for pid, _pp, args in _process_table() if home in args and "flower-superlink" in args])


def prune_flwr_home(env: dict[str, str]) -> None:
    """Bound disk use: the SuperLink database (runs, logs, FABs) and installed FABs are per-run scratch here.
    (The SuperLink log goes with it; the run's own outputs are in out_dir.)"""
    shutil.rmtree(env["FLWR_HOME"], ignore_errors=True)  # the private home of this invocation


def _run_config(config_file: Path | list[Path]) -> str:
    if isinstance(config_file, (list, tuple)):
        if any(";" in str(p) or "'" in str(p) for p in config_file):
            raise FlMdiscError("output folders of a sweep must not contain ';' or quotes")
        return "config-files='" + ";".join(str(p) for p in config_file) + "'"
    return f"config-file='{config_file}'"


def _submit_and_follow(flwr: str, cmd: list[str], env: dict[str, str], cwd: str, connection: list[str],
                       stream: bool, progress, superlink: subprocess.Popen | None = None) -> dict:
    """``flwr run`` (``cmd``), then follow the run to its end; return its final status from ``flwr list``.
    ``superlink``: the SuperLink process we started; when it is gone the run is too, and the error says how to
    resume."""
    sub = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    try:
        run_id = json.loads(sub.stdout)["run-id"]
    except (ValueError, KeyError):
        raise FlMdiscError(f"flwr run did not start: {(sub.stdout + sub.stderr).strip()[-800:]}") from None
    # Follow the run with one long-lived `flwr log --stream` (an idle gRPC stream) and ask `flwr list` for the
    # status only when it ends. Polling `flwr list` instead costs a whole Python start-up (~1 s of CPU) per
    # call: every 2 s that took a third of a core from the clients and made each round of a 2-core sweep
    # up to 1.7x slower (measured by benchmarks/flwr_poll_cost.py, retired; at commit ee1e392).
    first = True
    while True:
        follower = subprocess.Popen([flwr, "log", str(run_id), *connection, "--stream"], cwd=cwd, env=env,
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
        if superlink is not None and superlink.poll() is not None:
            raise FlMdiscError(f"the SuperLink stopped during run {run_id} (exit code {superlink.returncode}), and the "
                               "ServerApp with it; rerun the same command: the run resumes from its last checkpoint "
                               "(resume=true, checkpoint_every)")
        st = subprocess.run([flwr, "list", *connection, "--run-id", str(run_id), "--format", "json"], cwd=cwd,
                            env=env, capture_output=True, text=True)
        try:
            info = json.loads(st.stdout)["runs"][0]
        except (ValueError, KeyError, IndexError):
            raise FlMdiscError(f"cannot read the status of run {run_id}: {st.stdout.strip()[-400:]}") from None
        if str(info.get("status", "")).startswith("finished"):
            return {"run_id": run_id, **info}
        time.sleep(5.0)  # the log stream ended before the run did (a dropped connection): follow it again


def stop_all() -> None:
    """Stop the SuperLink (and everything below it) of every run this process still has going: the main thread
    calls it when a parallel sweep is interrupted, since Ctrl-C reaches the main thread only."""
    for env in list(_ACTIVE.values()):
        stop_superlink(env)
    for pids in list(_ACTIVE_PROCS.values()):
        kill_trees(list(pids))


def run_flwr(project: Path, config_file: Path | list[Path], num_clients: int, cpus_per_client: int = 1,
             gpus_per_client: float = 0.0, data_root: str | None = None, stream: bool = True,
             progress=None, ray_address: str = "local", engine: str = "simulation", lane: dict | None = None) -> dict:
    """Submit the app with ``config-file`` (or, given a list, ``config-files``: several cells of one federation run
    in turn by one ServerApp), follow its log, return the final status from ``flwr list``.

    ``engine="simulation"``: Flower's Simulation Runtime on Ray (a managed local SuperLink with a private home);
    ``engine="deployment"``: a SuperLink and ``num_clients`` SuperNodes as real processes on loopback
    (:func:`run_deployment`).

    ``lane`` (a parallel sweep's share of this machine, :func:`lane_shares`): ``num_cpus`` for the private Ray
    instance and ``env`` (e.g. ``CUDA_VISIBLE_DEVICES``) of this run; it gets its own FLWR_HOME."""
    if engine == "deployment":
        return run_deployment(project, config_file, num_clients, data_root, stream, progress, lane is not None)
    if engine != "simulation":
        raise FlMdiscError(f"unknown engine {engine!r}; choose simulation or deployment")
    env = ray_env(flwr_env(project, data_root, private=True, lane=lane is not None), ray_address)
    env.update((lane or {}).get("env", {}))
    flwr = _flwr_bin()
    neutral = env["FLWR_HOME"]
    stop_superlink(env)  # never reuse a SuperLink started with another environment / code
    fed = f"num-supernodes={num_clients} client-resources-num-cpus={cpus_per_client}"
    if gpus_per_client:
        fed += f" client-resources-num-gpus={gpus_per_client}"
    if lane and lane.get("num_cpus") and ray_address == "local":  # an attached cluster takes no counts
        fed += f" init-args-num-cpus={int(lane['num_cpus'])}"
    cmd = [flwr, "run", str(project), "--run-config", _run_config(config_file),
           "--federation-config", fed, "--format", "json"]
    _ACTIVE[neutral] = env
    try:
        return _submit_and_follow(flwr, cmd, env, neutral, [], stream, progress)
    finally:
        stop_superlink(env)  # also on Ctrl-C: never leave a SuperLink or Ray behind
        prune_flwr_home(env)
        _ACTIVE.pop(neutral, None)


def lane_shares(parallel: int, cpus_per_client: int = 1, num_cpus: int | None = None,
                gpus: list[str] | None = None) -> list[dict]:
    """The share of this machine each of ``parallel`` concurrent runs gets: an equal part of the CPUs (at least one
    client's worth) for its private Ray, and with several visible GPUs one of them in turn (``CUDA_VISIBLE_DEVICES``);
    with one GPU the runs share it (size ``sweep.parallel`` to its memory)."""
    if parallel < 1:
        raise FlMdiscError(f"sweep.parallel={parallel}: use 1 (sequential) or more")
    num_cpus = num_cpus or os.cpu_count() or 1
    if gpus is None:
        vis = os.environ.get("CUDA_VISIBLE_DEVICES")
        try:
            import torch

            n = torch.cuda.device_count()
        except Exception:  # noqa: BLE001 - no torch CUDA: no GPUs to share
            n = 0
        gpus = [g for g in vis.split(",") if g.strip()] if vis else [str(i) for i in range(n)]
    out = []
    for k in range(parallel):
        lane = {"num_cpus": max(int(cpus_per_client), num_cpus // parallel), "env": {}}
        if len(gpus) > 1:
            lane["env"]["CUDA_VISIBLE_DEVICES"] = gpus[k % len(gpus)]
        out.append(lane)
    return out


CONNECTION = "fl-mdisc-local"


def _wait_healthy(port: int, proc: subprocess.Popen, log: Path, timeout: float = 90.0, ca: Path | None = None) -> None:
    """Wait for the SuperLink's ``/health`` (over TLS, trusting ``ca``, when it has a certificate)."""
    import ssl
    import urllib.request

    url = f"{'https' if ca else 'http'}://127.0.0.1:{port}/health"
    context = ssl.create_default_context(cafile=str(ca)) if ca else None
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise FlMdiscError(f"flower-superlink exited ({proc.returncode}): {_tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=2, context=context) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise FlMdiscError(f"flower-superlink did not answer on 127.0.0.1:{port} within {timeout:.0f}s: {_tail(log)}")


def _tail(path: Path, n: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return "(no log)"


def deployment_commands(port: int, num_clients: int, node_ports: list[int], home: Path, keys: dict,
                        clientapp: str = "warm") -> dict[str, list[str]]:
    """The commands of a loopback federation (what docs/deployment.md shows for several machines): one SuperLink
    serving Fleet, Control and ServerAppIo over TLS on ``port`` with SuperNode authentication on (only registered
    public keys may connect); SuperNode ``i`` with the CA to trust, its own private key, its own Runtime API port and
    ``partition-id=i num-partitions=N`` as node config (which partition's data its ClientApp reads; the server binds
    the partition to the node's registered key, not to this). 127.0.0.1 only. ``clientapp="warm"`` (the default,
``deployment.clientapp``): every SuperNode runs under ``--isolation process`` with ``superexec-i`` beside it,
which forks its ClientApp processes from a warm process; ``"subprocess"``: Flower's default, the SuperNode starts
its own SuperExec and a fresh ``flwr-clientapp`` per message."""
    bindir = Path(sys.executable).parent
    cmds = {"superlink": [str(bindir / "flower-superlink"), "--host", "127.0.0.1", "--port", str(port),
                          "--ssl-ca-certfile", str(keys["ca"]), "--ssl-certfile", str(keys["cert"]),
                          "--ssl-keyfile", str(keys["key"]), "--enable-supernode-auth",
                          "--disable-runtime-dependency-installation", "--database", str(home / "superlink" / "state.db")]}
    for i in range(num_clients):
        cmds[f"supernode-{i}"] = [str(bindir / "flower-supernode"), "--superlink", f"127.0.0.1:{port}",
                                  "--root-certificates", str(keys["ca"]),
                                  "--auth-supernode-private-key", str(keys["nodes"][i][0]),
                                  "--host", "127.0.0.1", "--port", str(node_ports[i]),
                                  "--node-config", f"partition-id={i} num-partitions={num_clients}"]
        if clientapp != "warm":
            continue
        cmds[f"supernode-{i}"] += ["--isolation", "process"]
        # its SuperExec (Flower's process isolation: started by us, beside the node), which forks ClientApps from a
        # warm process (clients/warm_exec.py); --parent-pid <SuperNode pid> is added when the node is up
        cmds[f"superexec-{i}"] = [sys.executable, "-m", "clients.warm_exec", "--insecure",
                                  "--runtime-api-address", f"127.0.0.1:{node_ports[i]}"]
    return cmds


def _deployment(config_file: Path | list[Path]) -> dict:
    """The ``deployment`` block of the run's (first) config file (``clientapp``, ``keys``)."""
    from omegaconf import OmegaConf

    first = config_file[0] if isinstance(config_file, list) else config_file
    return OmegaConf.to_container(OmegaConf.load(first).deployment)


def register_nodes(flwr: str, keys: dict, env: dict[str, str], cwd: str) -> dict[int, int]:
    """``flwr supernode register`` each SuperNode's public key; return registered node id -> partition id."""
    mapping = {}
    for pid, (_priv, pub) in enumerate(keys["nodes"]):
        r = subprocess.run([flwr, "supernode", "register", str(pub), CONNECTION, "--format", "json"], cwd=cwd, env=env,
                           capture_output=True, text=True, timeout=120)
        try:
            mapping[int(json.loads(r.stdout)["node-id"])] = pid
        except (ValueError, KeyError):
            raise FlMdiscError(f"flwr supernode register failed for partition {pid}: "
                               f"{(r.stdout + r.stderr).strip()[-600:]}") from None
    return mapping


def _popen_logged(name: str, cmd: list[str], home: Path, env: dict[str, str]) -> tuple[subprocess.Popen, Path]:
    """Start one federation process in its own folder, FLWR_HOME and session, its output in ``<name>/log.txt``."""
    (home / name).mkdir(parents=True, exist_ok=True)
    log = home / name / "log.txt"
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=str(home / name), env=dict(env, FLWR_HOME=str(home / name)), stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True)
    return proc, log


def run_deployment(project: Path, config_file: Path | list[Path], num_clients: int, data_root: str | None = None,
                   stream: bool = True, progress=None, lane: bool = False) -> dict:
    """Flower's Deployment Engine on this machine: start a SuperLink and ``num_clients`` SuperNodes (each its own
    process, own FLWR_HOME, own port, partition id in its node config), submit the same ServerApp and ClientApp
    with ``flwr run . <connection>``, follow the run, and stop every process we started (also on Ctrl-C or a
    failure) and remove their private home.

    Differences from the simulation (shared/notes/flower-1.42-scaleout.md): ``--federation-config`` does not
    exist here (the ServerApp waits for exactly ``fed.num_clients`` SuperNodes); every message runs in a process of
    its own (forked from a warm SuperExec, ``deployment.clientapp``; our clients keep no state between rounds, so
    nothing is lost); an idle SuperNode polls every 3 s (Flower's), so a round costs a few seconds more. The
    processes start in their own session, so a Ctrl-C reaches this launcher only, which then stops them in order;
    a SuperLink that dies ends the run with an error that says to rerun the command (it resumes)."""
    env = flwr_env(project, data_root, private=True, lane=lane)
    flwr = _flwr_bin()
    home = Path(env["FLWR_HOME"])
    env[MARK_ENV] = str(home)
    from .pki import federation_keys, given_keys

    dep = _deployment(config_file)
    keys = given_keys(dep["keys"], num_clients) if dep["keys"] else federation_keys(home / "keys", num_clients)
    port = _free_port()
    node_ports = [_free_port() for _ in range(num_clients)]
    cmds = deployment_commands(port, num_clients, node_ports, home, keys, dep["clientapp"])
    node_map = home / "node-map.json"
    procs: list[subprocess.Popen] = []
    _ACTIVE_PROCS[str(home)] = pids = []
    try:
        link, link_log = _popen_logged("superlink", cmds.pop("superlink"), home, dict(env, **{NODE_MAP_ENV: str(node_map)}))
        procs.append(link)
        pids.append(link.pid)
        _wait_healthy(port, link, link_log, ca=keys["ca"])
        cli_home = home / "cli"
        cli_home.mkdir(parents=True, exist_ok=True)
        (cli_home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
            f'address = "127.0.0.1:{port}"\nroot-certificates = "{keys["ca"]}"\n')
        cenv = dict(env, FLWR_HOME=str(cli_home))
        node_map.write_text(json.dumps({str(k): v for k, v in register_nodes(flwr, keys, cenv, str(cli_home)).items()}))
        for name, cmd in cmds.items():  # SuperNodes, once their keys are registered, each followed by its SuperExec
            if name.startswith("superexec-"):
                cmd = cmd + ["--parent-pid", str(procs[-1].pid)]
            proc, _log = _popen_logged(name, cmd, home, env)
            procs.append(proc)
            pids.append(proc.pid)
        cmd = [flwr, "run", str(project), CONNECTION, "--run-config", _run_config(config_file), "--format", "json"]
        status = _submit_and_follow(flwr, cmd, cenv, str(cli_home), [CONNECTION], stream, progress, link)
        if status.get("status") != "finished:completed":
            status["superlink-log"] = _tail(link_log)
        return status
    finally:
        # also on Ctrl-C: never leave a SuperLink, SuperNode, SuperExec, ClientApp or ServerApp (orphans included)
        kill_trees([p.pid for p in procs] + marked(str(home)))
        _ACTIVE_PROCS.pop(str(home), None)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        prune_flwr_home(env)
