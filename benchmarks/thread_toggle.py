"""Does switching torch's thread count between honest (client_threads) and attacker (attacker_threads) calls slow
the lambda-update attacker? In-process, 6 repeats: attacker after attacker vs attacker after an honest call.

    .venv/bin/python benchmarks/thread_toggle.py      (data: $FL_MDISC_DATA)
"""
import statistics as st
import time

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fl_mdisc.config import compose, resolve_paths, to_json  # noqa: E402
from fl_mdisc.burnin import ensure_burnin, load_model  # noqa: E402
from fl_mdisc.models import get_params  # noqa: E402
from clients.honest import train_honest  # noqa: E402
from clients.malicious import train_malicious  # noqa: E402
cfg = compose(["preset=cpu", "attack=lambda_update", "strategy=st"]); resolve_paths(cfg)
entry = ensure_burnin(cfg, log=lambda m: None)
cj = to_json(cfg)
arr = get_params(load_model(cfg, entry["start"], entry["start_sha"]))
c = {"start-path": entry["start"], "start-sha": entry["start_sha"], "hist-path": entry["hist"], "hist-sha": entry["hist_sha"],
     "dsc-mu": 0.0, "dsc-tau": 0.0, "phase": "accumulate", "server-round": 1}
train_malicious(cj, arr, c, 4); train_honest(cj, arr, c, 0)
same, after_h = [], []
for rep in range(6):
    t = time.perf_counter(); train_malicious(cj, arr, c, 4); same.append(time.perf_counter() - t)
    train_honest(cj, arr, c, 0)  # sets client_threads (1)
    t = time.perf_counter(); train_malicious(cj, arr, c, 4); after_h.append(time.perf_counter() - t)
print("attacker after attacker: median %.3f  %s" % (st.median(same), [round(x, 2) for x in same]))
print("attacker after honest  : median %.3f  %s" % (st.median(after_h), [round(x, 2) for x in after_h]))
