"""How the non-IID envelope threshold depends on its window: a counterfactual on recorded grid cells.

DGC's non-IID threshold (``fl_mdisc/calibration.py:fit_threshold``) is the largest, over windows of the simulated
clean federation, of each window's own (1 - alpha) order statistic; a window holds at least 1 / alpha values, so with
alpha = 0.02 and 9 simulated honest updates a round a 10-round window of 90 values puts its threshold at its 2nd
largest value, an extreme-value statistic. This script refits mu from the cached simulated values with windows long
enough to hold ``k`` values above the threshold (k = 1 is today's rule) and applies each mu to the statistics the
DGC cells recorded (``rounds.jsonl``: every honest and attacker update's ``stat``): the honest false-positive rate on
the clean cell and the recall on the poisoned cell. It is a counterfactual, not a run: with another threshold the
flags, hence the trajectory and later statistics, would differ.

    .venv/bin/python benchmarks/envelope_window.py docs/results/grid-seeds012/cells [--k 1 3 5 10]
"""
import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def stats(cell: Path) -> tuple[np.ndarray, np.ndarray]:
    rows = [json.loads(x) for x in (cell / "rounds.jsonl").read_text().splitlines() if x.strip()]
    honest, attack = [], []
    for r in rows[:-1]:  # the trigger round is left out, as in the grid's recall
        for c in r["clients"]:
            if "stat" in c:
                (attack if c.get("malicious") else honest).append(float(c["stat"]))
    return np.asarray(honest), np.asarray(attack)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cells", type=Path)
    ap.add_argument("--k", type=int, nargs="+", default=[1, 3, 5, 10])
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from fl_mdisc.calibration import fit_threshold

    notes = []
    print("| setting | seed | k | window (rounds) | mu | honest FPR (clean cell) | recall (poisoned cell) |")
    print("|---|---|---|---|---|---|---|")
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
        setting, seed = clean.name.split("-clean-")[0], clean.name.rsplit("-s", 1)[1]
        for k in args.k:
            window = max(int(calib["fpr_window"]), math.ceil(k / (alpha * per_step)))
            mu, _tau = fit_threshold(steps, vals, alpha, window)
            fpr = float(np.mean(h_clean > mu)) if len(h_clean) else float("nan")
            rec = float(np.mean(a_pois > mu)) if len(a_pois) else float("nan")
            print(f"| {setting} | {seed} | {k} | {window} | {mu:.3f} | {fpr:.3f} | {rec:.2f} |")
        q = lambda v, x: float(np.quantile(v, x)) if len(v) else float("nan")  # noqa: E731
        notes.append(f"* {setting} seed {seed}: real honest q98 {q(h_clean, 0.98):.3f} (clean cell); attackers' "
                     f"statistic median {q(a_pois, 0.5):.3f}, q10-q90 {q(a_pois, 0.1):.3f}-{q(a_pois, 0.9):.3f} "
                     f"(poisoned cell); today's fit: largest two simulated values of the window that set mu: "
                     f"{top2(steps, vals, alpha, int(calib['fpr_window']), per_step)}")
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
