"""What does polling `flwr list` every 2 s cost the clients? (why fl-mdisc follows runs with `flwr log --stream`)

Times the lambda-update attacker's client call (CPU preset, federated, seed 0; the slowest client of a round)
in this process, alternately with nothing else running and with a background loop that runs
`flwr list` and sleeps 2 s (what `fl-mdisc` did while it waited for a sweep cell to finish).

    .venv/bin/python benchmarks/flwr_poll_cost.py [repeats=8]
"""
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from clients.malicious import train_malicious  # noqa: E402
from fl_mdisc.burnin import ensure_burnin, load_model  # noqa: E402
from fl_mdisc.config import compose, resolve_paths, to_json  # noqa: E402
from fl_mdisc.models import get_params  # noqa: E402

n = int(sys.argv[1]) if len(sys.argv) > 1 else 8
base = ["preset=cpu", "attack=lambda_update", "seed=0"]
if os.environ.get("FL_MDISC_CACHE"):
    base.append(f"cache_dir={os.environ['FL_MDISC_CACHE']}")
cfg = compose(base)
resolve_paths(cfg)
entry = ensure_burnin(cfg, log=lambda m: None)
arrays = get_params(load_model(cfg, entry["start"], entry["start_sha"]))
conf = {"start-path": entry["start"], "start-sha": entry["start_sha"], "hist-path": entry["hist"],
        "hist-sha": entry["hist_sha"], "dsc-mu": 0.0, "dsc-tau": 0.0, "phase": "accumulate", "server-round": 1}
cj = to_json(cfg)
flwr = str(Path(sys.executable).with_name("flwr"))
stop = threading.Event()


def poller():
    while not stop.is_set():
        subprocess.run([flwr, "list", "--format", "json"], capture_output=True)  # no SuperLink: start-up cost only
        stop.wait(2.0)


def call():
    t = time.perf_counter()
    train_malicious(cj, arrays, conf, 4)
    return time.perf_counter() - t


call()  # warm-up
quiet, polled = [], []
for _ in range(n):
    quiet.append(call())
    stop.clear()
    th = threading.Thread(target=poller, daemon=True)
    th.start()
    time.sleep(0.5)
    polled.append(call())
    stop.set()
    th.join()
print(f"attacker client call, median of {n} (min, max): quiet {statistics.median(quiet):.3f} s "
      f"({min(quiet):.3f}, {max(quiet):.3f}); with `flwr list` every 2 s {statistics.median(polled):.3f} s "
      f"({min(polled):.3f}, {max(polled):.3f}); ratio {statistics.median(polled) / statistics.median(quiet):.2f}")
