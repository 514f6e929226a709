"""Where does an honest client's call go? (the grid's cost is compute-bound)

Times ``clients.honest.train_honest`` in-process (CPU preset, 10 clients, pool mode, round 3 at theta_start) and
prints a cProfile of 10 calls sorted by cumulative time.

    .venv/bin/python benchmarks/honest_client_profile.py

Data: $FL_MDISC_DATA; cache: $FL_MDISC_CACHE (else ./.cache/fl-mdisc). A few seconds after the burn-in cache hit.
"""
import cProfile
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from clients import runtime  # noqa: E402
from clients.honest import train_honest  # noqa: E402
from fl_mdisc.burnin import ensure_burnin  # noqa: E402
from fl_mdisc.config import compose, resolve_paths, to_json  # noqa: E402
from fl_mdisc.models import get_params  # noqa: E402


def main() -> None:
    cfg = compose(["preset=cpu", "fed.num_clients=10", "fed.attacker_data=pool", "attack=none"])
    resolve_paths(cfg)
    entry = ensure_burnin(cfg)
    cj = to_json(cfg)
    params = get_params(runtime.model_from(cj, entry["start"], entry["start_sha"]))
    conf = {"server-round": 3, "phase": "accumulate", "start-path": entry["start"], "start-sha": entry["start_sha"],
            "hist-path": entry["hist"], "hist-sha": entry["hist_sha"]}
    train_honest(cj, params, conf, 0)  # warm caches
    t = time.time()
    for i in range(10):
        train_honest(cj, params, conf, i % 9)
    print(f"per call: {(time.time() - t) / 10:.3f} s")
    pr = cProfile.Profile()
    pr.enable()
    for i in range(10):
        train_honest(cj, params, conf, i % 9)
    pr.disable()
    pstats.Stats(pr).sort_stats("cumulative").print_stats(12)


if __name__ == "__main__":
    main()
