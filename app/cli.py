"""``fl-mdisc``: the command line.

``fl-mdisc run [hydra overrides]`` composes and validates the config (errors are one line, exit 2), resolves
paths, writes the resolved ``config.yaml`` into the output folder, and runs the simulation with ``flwr run``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from omegaconf import OmegaConf

from fl_mdisc.config import compose, engine, ray_address, resolve_paths
from fl_mdisc.errors import FlMdiscError

from .runner import gpus_per_client, prepare, project_dir, warm_burnin


def cmd_run(args) -> int:
    from .launch import run_flwr

    if args.multirun:
        from .tables import multirun

        multirun(args.overrides, quiet=args.quiet)
        return 0

    cfg, path = prepare(args.overrides)
    print(f"fl-mdisc: output folder {cfg.out_dir}", flush=True)
    warm_burnin(cfg)
    if args.prepare_only:  # for a federation started by hand (README "Beyond one machine")
        print(f"fl-mdisc: config written to {path}; submit it with\n"
              f"  flwr run {project_dir()} <connection> --run-config \"config-file='{path}'\" --stream")
        return 0
    status = run_flwr(project_dir(), path, int(cfg.fed.num_clients), int(cfg.client_threads), gpus_per_client(cfg),
                      cfg.data_root, stream=not args.quiet, ray_address=ray_address(cfg), engine=engine(cfg))
    print(f"fl-mdisc: flwr run {status['run_id']} {status.get('status')}", flush=True)
    if status.get("status") != "finished:completed":
        detail = status.get("status-details") or status.get("details") or ""
        raise FlMdiscError(f"the run did not complete ({status.get('status')}): {str(detail)[-500:]}")
    summary = Path(cfg.out_dir) / "summary.json"
    if summary.is_file():
        print(json.dumps(json.loads(summary.read_text()), indent=1))
    print(f"fl-mdisc: results in {cfg.out_dir} (metrics.jsonl, rounds.jsonl, config.yaml, summary.json)")
    return 0


def fit_calibration(out_dir: str | Path) -> dict:
    """Fit C (median honest update norm over the first 10 rounds, near theta_start) and P_t = mu + tau * t
    (tau = least-squares slope of honest MD_k over rounds, mu = max of the detrended values) from a clean run."""
    import numpy as np

    from fl_mdisc.md import fit_threshold

    rows = [json.loads(line) for line in open(Path(out_dir) / "rounds.jsonl")]
    rows = [r for r in rows if r["phase"] == "accumulate"]
    # honest update norms near theta_start (the first 10 rounds: one norm per round with one participant)
    first = [c["norm"] for r in rows[:10] for c in r["clients"] if not c.get("malicious") and "norm" in c]
    steps, mds = [], []
    for r in rows:
        for c in r["clients"]:
            if not c.get("malicious") and "md" in c:
                steps.append(r["round"] - 1)
                mds.append(c["md"])
    if not first or not mds:
        raise FlMdiscError(f"{out_dir}/rounds.jsonl has no per-client DGC log; calibrate with strategy=dgc")
    mu, tau = fit_threshold(steps, mds)
    return {"clip_norm": float(np.median(first)), "clip_norm_p10": float(np.percentile(first, 10)),
            "clip_norm_p90": float(np.percentile(first, 90)), "mu": mu, "tau": tau, "rounds": len(rows),
            "honest_md_mean": float(np.mean(mds)), "source": str(out_dir)}


# the sweep commands: (name, module, function, help, what they take beside hydra overrides)
SWEEPS = (
    ("table13", "app.tables", "table13", "Table 13: strategies x {clean, poisoned} x seeds, table + plots",
     "seeds=[..] strategies=[..] protocol=.."),
    ("grid", "app.grid", "grid", "does DGC generalise? settings x strategies x {clean, poisoned} x seeds",
     "seeds=[..] settings=[..] strategies=[..] attacks=[..] missing=run|skip"),
    ("table1", "app.tables", "table1", "Table 1: the online stream (one-client federation), ST/GC/AT/DSC",
     "seeds=[..] methods=[..]"),
    ("table3", "app.table3", "table3", "Table 3: the MD-aware attacker (beta sweep) against ST and DSC, online stream",
     "seeds=[..] betas=[..] methods=[st,dsc]"),
    ("adaptive", "app.adaptive_sweep", "adaptive", "the DGC-aware attacker: budgets x strategies x seeds (federated)",
     "seeds=[..] budgets=[unaware,2,1,0.5] strategies=[..]"),
)


def _sweep(module: str, func: str):
    def run(args) -> int:
        import importlib

        getattr(importlib.import_module(module), func)(args.overrides, not args.stream)
        return 0
    return run


def cmd_docs(args) -> int:
    from .docs import docs

    stale = docs(project_dir(), check=args.check)
    verb = "differ from their result files" if args.check else "regenerated"
    print(f"fl-mdisc docs: {len(stale)} page(s)/figure(s) {verb}" + (": " + ", ".join(stale) if stale else ""))
    return 1 if args.check and stale else 0


def cmd_calibrate(args) -> int:
    """Show the server's self-calibration (C and the paper gate's threshold, ``strategy=dgc_paper`` unless another
    strategy is given) for a config, as a run would compute it.

    Runs no simulation: trains/loads the burn-in, then the simulated clean federation of fl_mdisc/calibration.py
    (cached beside the burn-in). ``--fit-only out_dir=DIR`` instead fits C, mu, tau from a real clean run's
    rounds.jsonl (a check of the rule against what honest clients actually sent)."""
    from fl_mdisc.burnin import ensure_burnin
    from fl_mdisc.calibration import calibrate

    if args.fit_only:
        cfg = compose(args.overrides)
        resolve_paths(cfg)
        if cfg.out_dir is None:
            raise FlMdiscError("--fit-only needs out_dir=DIR of a finished clean run with strategy=dgc")
        fit = fit_calibration(cfg.out_dir)
        (Path(cfg.out_dir) / "calibration_fit.json").write_text(json.dumps(fit, indent=1))
        print(json.dumps(fit, indent=1))
        return 0
    over = args.overrides if any(o.startswith("strategy=") for o in args.overrides) else ["strategy=dgc_paper"] + args.overrides
    cfg, _path = prepare(over, tag="calibrate")
    warm_burnin(cfg)
    entry = ensure_burnin(cfg, log=lambda m: print(f"fl-mdisc: {m}", flush=True))
    fit = calibrate(cfg, entry, log=lambda m: print(f"fl-mdisc: {m}", flush=True))
    out = Path(cfg.out_dir)
    (out / "calibration_fit.json").write_text(json.dumps(fit, indent=1))
    from .report import plot_calibration

    plot_calibration(fit, out / "calibration.png")
    print(json.dumps({k: v for k, v in fit.items() if k not in ("values", "key")}, indent=1))
    print(f"fl-mdisc: calibration written to {out} (calibration_fit.json, calibration.png)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fl-mdisc", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("run", help="run one simulation (flwr run) with hydra overrides, e.g. strategy=gc seed=1")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--quiet", action="store_true", help="do not stream the simulation log")
    p.add_argument("--prepare-only", action="store_true",
                   help="write the resolved config and warm the burn-in cache, print the flwr run command, run nothing")
    p.add_argument("--multirun", "-m", action="store_true",
                   help="hydra sweep: key=a,b seed=0,1,2 runs the cartesian product as cells of one resumable sweep")
    p.set_defaults(fn=cmd_run)
    p = sub.add_parser("calibrate", help="show the server's self-calibration: C and the DGC threshold for a config")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--fit-only", action="store_true",
                   help="instead fit C, mu, tau from a finished clean run (out_dir=DIR, strategy=dgc)")
    p.set_defaults(fn=cmd_calibrate)
    for name, module, func, text, extra in SWEEPS:
        p = sub.add_parser(name, help=text)
        p.add_argument("overrides", nargs="*", help="hydra overrides plus " + extra)
        p.add_argument("--stream", action="store_true", help="stream each simulation's log")
        p.set_defaults(fn=_sweep(module, func))
    p = sub.add_parser("docs", help="regenerate the generated tables and figures of README.md and docs/ from docs/results/")
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 when a page or figure differs")
    p.set_defaults(fn=cmd_docs)
    p = sub.add_parser("bench", help="cost of DSC/AT/DGC and of the Flower/Ray layer (bench.json, bench.md)")
    p.add_argument("overrides", nargs="*")
    p.set_defaults(fn=lambda a: (__import__("app.bench", fromlist=["x"]).bench(a.overrides), 0)[1])
    p = sub.add_parser("show", help="print the composed, validated config")
    p.add_argument("overrides", nargs="*")
    p.set_defaults(fn=lambda a: print(OmegaConf.to_yaml(compose(a.overrides))) or 0)
    args = parser.parse_args(argv)
    import signal

    def _term(signum, frame):  # `kill` / CI timeouts: unwind like Ctrl-C so the SuperLink and Ray are stopped
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)
    try:
        return int(args.fn(args) or 0)
    except FlMdiscError as exc:
        print(f"fl-mdisc: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fl-mdisc: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
