"""How the non-IID envelope threshold depends on its window: a counterfactual on recorded grid cells.

DGC's non-IID threshold (``fl_mdisc/calibration.py:fit_threshold``) is the largest, over windows of the simulated
clean federation, of each window's own (1 - alpha) order statistic; a window holds at least 1 / alpha values, so with
alpha = 0.02 and 9 simulated honest updates a round a 10-round window of 90 values puts its threshold at its 2nd
largest value, an extreme-value statistic. This script refits mu from the cached simulated values with windows long
enough to hold ``k`` values above the threshold (k = 1 is today's rule) and applies each mu to the statistics the
DGC cells recorded (``rounds.jsonl``: every honest and attacker update's ``stat``): the honest false-positive rate on
the clean cell and the recall on the poisoned cell. It is a counterfactual, not a run: with another threshold the
flags, hence the trajectory and later statistics, would differ.

``--cap`` adds, per k, the same threshold with DGC's flag cap (``strategy.max_flagged``: at most c = min(K, f) updates
flagged a round, the round's c largest statistics above mu; ``strategies/clipping.py:capped_flags``) with c from the
cell's recorded config as the rule resolves it today (None for IID and for K <= f). On cells recorded without the cap
this is the counterfactual that motivated it; on cells recorded with it, it reproduces their flags.

    .venv/bin/python benchmarks/envelope_window.py docs/results/grid-seeds012/cells [--k 1 3 5 10] [--cap]
"""
import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def rounds(cell: Path) -> list[list[tuple[float, bool]]]:
    """Per round (the trigger round left out, as in the grid's recall): (statistic, malicious) of every update."""
    rows = [json.loads(x) for x in (cell / "rounds.jsonl").read_text().splitlines() if x.strip()]
    return [[(float(c["stat"]), bool(c.get("malicious"))) for c in r["clients"] if "stat" in c] for r in rows[:-1]]


def stats(cell: Path) -> tuple[np.ndarray, np.ndarray]:
    honest, attack = [], []
    for rnd in rounds(cell):
        for s, m in rnd:
            (attack if m else honest).append(s)
    return np.asarray(honest), np.asarray(attack)


def top_client(cell: Path, mu: float) -> str:
    """The honest client with the largest median statistic: its share of flags at mu (no cap) and its statistic's
    median per block of 10 rounds (does it drift?)."""
    rows = [json.loads(x) for x in (cell / "rounds.jsonl").read_text().splitlines() if x.strip()][:-1]
    per: dict = {}
    for r in rows:
        for c in r["clients"]:
            if "stat" in c and not c.get("malicious"):
                per.setdefault(c["partition-id"], []).append((r.get("round", 0), float(c["stat"])))
    pid, recs = max(per.items(), key=lambda kv: np.median([v for _, v in kv[1]]))
    v = np.asarray([x for _, x in recs])
    blocks = [float(np.median(v[i:i + 10])) for i in range(0, len(v), 10)]
    honest = sum(len(x) for x in per.values())
    return (f"honest client {pid} ({len(v)} of {honest} honest updates): median {np.median(v):.2f}, flagged "
            f"{np.mean(v > mu):.0%} at mu; its median per 10 participations {', '.join(f'{b:.2f}' for b in blocks)}")


def flag_rates(rnds, mu: float, cap) -> tuple[float, float]:
    """(share of honest updates flagged, share of attacker updates flagged) at threshold mu with flag cap ``cap``."""
    from strategies.clipping import capped_flags

    hf = hn = af = an = 0
    for rnd in rnds:
        for (_s, m), f in zip(rnd, capped_flags([s for s, _ in rnd], mu, cap)):
            if m:
                af, an = af + f, an + 1
            else:
                hf, hn = hf + f, hn + 1
    return (hf / hn if hn else float("nan")), (af / an if an else float("nan"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cells", type=Path)
    ap.add_argument("--k", type=int, nargs="+", default=[1, 3, 5, 10])
    ap.add_argument("--cap", action="store_true", help="add rows with DGC's flag cap (strategy.max_flagged)")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from omegaconf import OmegaConf

    from fl_mdisc.calibration import fit_threshold, max_flagged

    notes = []
    print("| setting | seed | k | window (rounds) | mu | flag cap | honest FPR (clean cell) | recall (poisoned cell) |")
    print("|---|---|---|---|---|---|---|---|")
    for clean in sorted(args.cells.glob("*-clean-dgc-s*")):
        calib = json.loads((clean / "calibration.json").read_text()).get("server_fit") or {}
        if not calib.get("fpr_window"):
            continue  # a pooled (IID) fit: no window to vary
        poisoned = clean.parent / clean.name.replace("-clean-", "-poisoned-")
        fit = json.loads(Path(calib["path"]).read_text())
        steps = np.asarray(fit["values"]["steps"])
        vals = np.asarray(fit["values"]["stat"])
        alpha = float(fit["target_fpr"])
        per_step = len(vals) / len(np.unique(steps))
        h_clean, _ = stats(clean)
        _, a_pois = stats(poisoned) if (poisoned / "rounds.jsonl").is_file() else (None, np.asarray([]))
        r_clean = rounds(clean)
        r_pois = rounds(poisoned) if (poisoned / "rounds.jsonl").is_file() else []
        cap = max_flagged(OmegaConf.load(clean / "config.yaml"))
        setting, seed = clean.name.split("-clean-")[0], clean.name.rsplit("-s", 1)[1]
        for k in args.k:
            window = max(int(calib["fpr_window"]), math.ceil(k / (alpha * per_step)))
            mu, _tau = fit_threshold(steps, vals, alpha, window)
            for c in ([None, cap] if args.cap and cap is not None else [None]):
                fpr = flag_rates(r_clean, mu, c)[0]
                rec = flag_rates(r_pois, mu, c)[1]
                print(f"| {setting} | {seed} | {k} | {window} | {mu:.3f} | {c or '–'} | {fpr:.3f} | {rec:.2f} |")
        q = lambda v, x: float(np.quantile(v, x)) if len(v) else float("nan")  # noqa: E731
        notes.append(f"* {setting} seed {seed}: real honest q98 {q(h_clean, 0.98):.3f} (clean cell); attackers' "
                     f"statistic median {q(a_pois, 0.5):.3f}, q10-q90 {q(a_pois, 0.1):.3f}-{q(a_pois, 0.9):.3f} "
                     f"(poisoned cell); today's fit: largest two simulated values of the window that set mu: "
                     f"{top2(steps, vals, alpha, int(calib['fpr_window']), per_step)}; "
                     f"{top_client(clean, float(calib['mu']))}")
    print()
    print("\n".join(notes))
    return 0


def top2(steps, vals, alpha: float, window: int, per_step: float) -> str:
    """The two largest simulated values of the window whose own threshold is largest (today's rule, k = 1)."""
    from fl_mdisc.calibration import fit_fpr_threshold

    window = max(window, math.ceil(1 / (alpha * per_step)))
    lo, hi = int(steps.min()), int(steps.max())
    starts = list(range(lo, hi + 1, window))
    if len(starts) > 1 and hi + 1 - starts[-1] < window:
        starts.pop()
    best = max(zip(starts, starts[1:] + [hi + 1]), key=lambda ab: fit_fpr_threshold(
        steps[(steps >= ab[0]) & (steps < ab[1])], vals[(steps >= ab[0]) & (steps < ab[1])], alpha, slope=False)[0])
    w = np.sort(vals[(steps >= best[0]) & (steps < best[1])])
    return f"{w[-1]:.3f}, {w[-2]:.3f} (rounds {best[0]}-{best[1] - 1}, window median {np.median(w):.3f})"


if __name__ == "__main__":
    raise SystemExit(main())
