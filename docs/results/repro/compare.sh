#!/usr/bin/env bash
# For each cell rerun here: is it the committed cell byte for byte, and where do they part? (run from the repo root)
cd "$(dirname "$0")/../../.."
pair() {  # rerun cell, committed cell
  for f in metrics.jsonl rounds.jsonl; do
    if cmp -s "$1/$f" "$2/$f"; then echo "$1/$f: identical"; else echo "$1/$f: $(cmp "$1/$f" "$2/$f" | sed 's/.*differ: //')"; fi
  done
  echo "  start here:      $(head -1 "$1/metrics.jsonl")"
  echo "  start committed: $(head -1 "$2/metrics.jsonl")"
  echo "  burn-in cache key here / committed: $(basename "$(python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['burnin_dir'])" "$1/calibration.json")") / $(basename "$(python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['burnin_dir'])" "$2/calibration.json")")"
}
R=docs/results/repro
pair $R/table3-m2/online-dsc-b0.1-s0 docs/results/table3-m2/cells/online-dsc-b0.1-s0
pair $R/table3-m2-input/online-dsc-b0.1-s0 docs/results/table3-m2-input/cells/online-dsc-b0.1-s0
pair $R/reference-seeds012/iid-n5-alie-gc-s0 docs/results/reference-seeds012/cells/iid-n5-alie-gc-s0
pair $R/reference-seeds012-n100/iid-n100-k10-f10-alie-gc-s0 docs/results/reference-seeds012-n100/cells/iid-n100-k10-f10-alie-gc-s0
pair "$R/reference-optimal-seeds012/iid-n5-alie-byzfl-cc@f-s0" docs/results/reference-optimal-seeds012/cells/iid-n5-alie-byzfl-cc-s0
