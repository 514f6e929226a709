"""Two recordings of the same grid cells side by side: mean accuracy, DGC's honest FPR and recall.

Used to read what a rule change did to the cells it reran (e.g. the DGC flag cap: the cells of commit 5bb2506
against today's): extract the old cells with ``git archive <commit> <cells dir> | tar -x -C OLD`` and run

    .venv/bin/python benchmarks/compare_cells.py OLD/docs/results/grid-seeds012/cells docs/results/grid-seeds012/cells \
        --glob 'dir0.*-n10-*-dgc-s*'

Mean accuracy = mean over the accumulation phase's evaluations (the grid's "clean"/"poisoned" columns); FPR and
recall leave the trigger round out, as the grid does.
"""
import argparse
import json
from pathlib import Path


def mean_acc(cell: Path):
    if not (cell / "metrics.jsonl").is_file():
        return None
    rows = [json.loads(x) for x in (cell / "metrics.jsonl").read_text().splitlines() if x.strip()]
    acc = [r["accuracy"] for r in rows if r.get("phase") == "accumulate"]
    return sum(acc) / len(acc) if acc else None


def flags(cell: Path):
    if not (cell / "rounds.jsonl").is_file():
        return None, None, 0
    rows = [json.loads(x) for x in (cell / "rounds.jsonl").read_text().splitlines() if x.strip()][:-1]
    ups = [c for r in rows for c in r["clients"] if "stat" in c]
    h = [c["flagged"] for c in ups if not c.get("malicious")]
    a = [c["flagged"] for c in ups if c.get("malicious")]
    spared = sum(bool(c.get("spared")) for c in ups if not c.get("malicious"))
    return (sum(h) / len(h) if h else None), (sum(a) / len(a) if a else None), spared


def fmt(x, nd=2):
    return "–" if x is None else f"{x:.{nd}f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("--glob", default="*-dgc-s*")
    args = ap.parse_args(argv)
    print("| cell | accuracy before | after | honest FPR before | after | honest updates spared by the cap | "
          "recall before | after |")
    print("|---|---|---|---|---|---|---|---|")
    for new in sorted(args.new.glob(args.glob)):
        old = args.old / new.name
        (fo, ro, _), (fn, rn, sp) = flags(old), flags(new)
        print(f"| {new.name} | {fmt(mean_acc(old))} | {fmt(mean_acc(new))} | {fmt(fo, 3)} | {fmt(fn, 3)} | {sp} | "
              f"{fmt(ro)} | {fmt(rn)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
