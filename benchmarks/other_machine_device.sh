#!/usr/bin/env bash
# The device check behind README "Another machine": run benchmarks/other_machine.py on the lent GPU box, where
# flwr/Ray are not installed. CIFAR-10 travels in four pieces (.devdata/{a,b,c,d}, made from ../shared/data by
# the snippet in docs/results/other-machine/README.md); hydra/omegaconf/antlr4 travel as plain packages in .whl/site.
# Usage on the device: bash benchmarks/other_machine_device.sh SEEDS ROUNDS NAME [overrides...]
set -euo pipefail
export PYTHONPATH="$PWD/.whl/site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p /root/cifar /root/data/cifar10
[ -f /root/data/cifar10/test.npz ] || { cp .devdata/d/*.npy /root/cifar/; python3 - <<'PY'
import numpy as np
d = "/root/cifar"
x = np.concatenate([np.load(f"{d}/x{i}.npy") for i in range(3)])
np.savez("/root/data/cifar10/train.npz", x=x, y=np.load(f"{d}/ytr.npy"))
np.savez("/root/data/cifar10/test.npz", x=np.load(f"{d}/xte.npy"), y=np.load(f"{d}/yte.npy"))
print("data", x.shape)
PY
}
nvidia-smi --query-gpu=name --format=csv,noheader || true
lscpu | grep -m1 "Model name" || true
seeds=$1 rounds=$2 name=$3; shift 3
python3 benchmarks/other_machine.py "$seeds" "$rounds" "${OUT:-/tmp}/$name.json" \
  data_root=/root/data cache_dir=/root/cache "$@"
