"""Does ``fl_mdisc.train.pick_device`` make an attacked trajectory bit-reproducible on a GPU?

Why: on an H100 a paper-preset harness run was not reproducible before ``pick_device`` asked for deterministic
kernels (ST and GC, which did identical maths, differed from round 10 on and ended 44.45 vs 15.97 %). This measures
the same kind of trajectory without Flower or the data set (so it runs on a bare GPU machine): the paper's model
(ResNet-18, width ``--width``, BatchNorm, channels-last) on a fixed synthetic CIFAR-shaped stream, each step an
accumulative poison batch (second-order term + PGD, :func:`fl_mdisc.attack.craft_poison`), a client step with lr 1
and the server's SGD (lr 0.1, momentum 0.9), as Pang's harness does, plus the batch's MD against the starting model.

Modes, each in a fresh process (cuDNN/cuBLAS settings are process-wide and must precede CUDA's start):
``det`` = :func:`pick_device` (cuDNN deterministic, no autotuning, deterministic algorithms, cuBLAS workspace);
``nondet`` = cuDNN autotuning on, no deterministic algorithms (PyTorch's defaults plus benchmark mode);
``cpu`` = one step on the CPU (the reference for the size of GPU-vs-CPU rounding). The GPU modes run the trajectory
twice. Reported per mode: whether the two repeats are bit-identical (SHA-256 of the parameters after every step), the
first step where they differ, seconds per step, and the largest |difference| of the parameters after the first step
from ``cpu``.

Usage (GPU machine): ``python benchmarks/cuda_determinism.py --steps 30 --out DIR``; needs only torch and numpy.
``--device cpu`` runs the GPU modes on the CPU instead (``det``: :func:`pick_device`'s CPU path, which sets nothing),
still reporting whether the repeats agree: a toy-size check without a GPU (tests/test_benchmarks.py:
``--device cpu --steps 2 --width 4 --batch 8``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CIFAR = {"shape": [3, 32, 32], "num_classes": 10, "mean": [0.4914, 0.4822, 0.4465], "std": [0.2023, 0.1994, 0.2010]}


class _Keys(dict):
    """A model config read both ways, as ``build_model`` reads an OmegaConf node (no omegaconf needed)."""

    __getattr__ = dict.__getitem__


def trajectory(mode: str, steps: int, width: int, batch: int, device: str = "cuda") -> dict:
    import warnings
    from types import SimpleNamespace

    import numpy as np
    import torch

    from fl_mdisc.attack import craft_poison, second_order_term
    from fl_mdisc.md import md_per_sample
    from fl_mdisc.models import build_model
    from fl_mdisc.train import local_sgd, pick_device

    if mode.startswith("det"):
        dev = pick_device(SimpleNamespace(device=device))
    elif mode.startswith("nondet"):
        torch.backends.cudnn.benchmark = True
        dev = torch.device(device)
    else:
        dev = torch.device("cpu")
        torch.set_num_threads(os.cpu_count() or 1)
    g = torch.Generator().manual_seed(0)
    n = (steps + 2) * batch
    xs = torch.rand(n, 3, 32, 32, generator=g)
    ys = torch.randint(0, 10, (n,), generator=g)
    xt, yt = xs[:batch].to(dev), ys[:batch].to(dev)  # the attacker's trigger and validation batches
    xv, yv = xs[batch: 2 * batch].to(dev), ys[batch: 2 * batch].to(dev)
    if mode == "cpu":  # the rounding reference: one step, once (double back-prop through ResNet-18 is slow on CPUs)
        steps, reps = 1, 1
    else:
        reps = 1 if mode.endswith("1") else 2  # det1 / nondet1: one trajectory per process (compared across processes)
    runs = []
    warnings.simplefilter("always")
    caught = warnings.catch_warnings(record=True)
    seen = caught.__enter__()
    for _rep in range(reps):
        torch.manual_seed(0)
        model = build_model(_Keys(name="resnet18", width=width, channels_last=True), CIFAR).to(dev)
        hist = build_model(_Keys(name="resnet18", width=width, channels_last=True), CIFAR).to(dev)
        hist.load_state_dict(model.state_dict())
        hist.eval()
        params = [p for p in model.parameters() if p.requires_grad]
        mom = [torch.zeros_like(p) for p in params]
        hashes, mds, first = [], [], None
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for s in range(steps):
            lo = (s + 2) * batch
            x, y = xs[lo: lo + batch].to(dev), ys[lo: lo + batch].to(dev)
            h = second_order_term(model, xt, yt, xv, yv)
            xp = craft_poison(model, x, y, h, 0.2, 0.2, 2, 1.0)
            before = [p.detach().clone() for p in params]
            local_sgd(model, xp, y, 1.0, 1)  # client: raw gradient step (lr 1)
            with torch.no_grad():
                for p, b, m in zip(params, before, mom):
                    d = b - p  # = grad
                    m.mul_(0.9).add_(d)
                    p.copy_(b - 0.1 * m)  # server SGD lr 0.1, momentum 0.9
            mds.append(float(md_per_sample(hist, model, xp).mean()))
            flat = torch.cat([p.detach().reshape(-1) for p in params]).float().cpu().numpy()
            hashes.append(hashlib.sha256(flat.tobytes()).hexdigest()[:16])
            if s == 0:
                first = flat.astype(np.float64)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        runs.append({"hashes": hashes, "md": mds, "seconds_per_step": (time.perf_counter() - t0) / steps,
                     "final": torch.cat([p.detach().reshape(-1) for p in params]).double().cpu().numpy(),
                     "first": first})
    caught.__exit__(None, None, None)
    a, b = runs[0], runs[-1]
    diff = next((i for i, (u, v) in enumerate(zip(a["hashes"], b["hashes"])) if u != v), None)
    return {"mode": mode, "device": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu",
            "torch": torch.__version__, "steps": steps, "width": width, "batch": batch,
            "repeat_bit_identical": diff is None, "first_differing_step": diff,
            "max_abs_diff_between_repeats": float(np.abs(a["final"] - b["final"]).max()),
            "seconds_per_step": [round(r["seconds_per_step"], 4) for r in runs],
            "md_last": [a["md"][-1], b["md"][-1]],
            "warnings": sorted({str(w.message)[:200] for w in seen}), "hashes": a["hashes"], "first": a["first"].tolist(),
            **({"final_params": a["final"].tolist()} if reps == 1 and mode != "cpu" else {})}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--modes", default="det,nondet,cpu")
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="where the det/nondet modes run")
    ap.add_argument("--out", default=".")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.child:
        res = trajectory(a.child, a.steps, a.width, a.batch, a.device)
        (out / f"{a.child}.json").write_text(json.dumps(res))
        return 0
    import numpy as np

    results = {}
    child = [sys.executable, __file__, "--steps", str(a.steps), "--width", str(a.width), "--batch", str(a.batch),
             "--device", a.device, "--out", str(out), "--child"]
    for mode in a.modes.split(","):
        subprocess.run([*child, mode], check=True)
        results[mode] = json.loads((out / f"{mode}.json").read_text())
        (out / f"{mode}.json").unlink()
        text = report(results, a, out)  # after every mode: a run stopped at its time limit keeps what it measured
    for mode in ("det", "nondet"):  # two fresh processes, one trajectory each: what a user rerunning a config sees
        if f"{mode}1" in results:
            subprocess.run([*child, f"{mode}1"], check=True)
            other = json.loads((out / f"{mode}1.json").read_text())
            (out / f"{mode}1.json").unlink()
            h1, h2 = results[f"{mode}1"]["hashes"], other["hashes"]
            results[f"{mode}1"]["repeat_bit_identical"] = h1 == h2
            results[f"{mode}1"]["first_differing_step"] = next((i for i, (u, v) in enumerate(zip(h1, h2)) if u != v), None)
            results[f"{mode}1"]["max_abs_diff_between_repeats"] = float(
                np.abs(np.asarray(results[f"{mode}1"]["final_params"]) - np.asarray(other["final_params"])).max())
            results[f"{mode}1"]["seconds_per_step"] += other["seconds_per_step"]
            text = report(results, a, out)
    print(text)
    return 0


def report(results: dict, a, out: Path) -> str:
    import numpy as np

    ref = results.get("cpu")
    lines = [f"# CUDA determinism of an attacked trajectory (benchmarks/cuda_determinism.py, {a.steps} steps, "
             f"ResNet-18 width {a.width}, batch {a.batch})", "",
             "| mode | device | repeats bit-identical | first differing step | max abs diff between repeats | "
             "s/step | max abs diff from CPU after step 1 |", "|---|---|---|---|---|---|---|"]
    for mode, r in results.items():
        vs_cpu = "–" if ref is None or mode == "cpu" else \
            f"{float(np.abs(np.asarray(r['first']) - np.asarray(ref['first'])).max()):.3g}"
        lines.append(f"| {mode} | {r['device']} | {r['repeat_bit_identical']} | {r['first_differing_step']} | "
                     f"{r['max_abs_diff_between_repeats']:.3g} | {min(r['seconds_per_step']):.4f} | {vs_cpu} |")
    lines.append("")
    lines.append(f"torch {next(iter(results.values()))['torch']}; command: python benchmarks/cuda_determinism.py "
                 f"--steps {a.steps} --width {a.width} --batch {a.batch}" + ("" if a.device == "cuda" else
                                                                              f" --device {a.device}"))
    text = "\n".join(lines) + "\n"
    (out / "cuda_determinism.md").write_text(text)
    (out / "cuda_determinism.json").write_text(json.dumps(
        {m: {k: v for k, v in r.items() if k not in ("first", "final_params")} for m, r in results.items()}, indent=1))
    return text


if __name__ == "__main__":
    sys.exit(main())
