"""Local training and evaluation helpers shared by clients, burn-in and the server."""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F


def pick_device(cfg) -> torch.device:
    """``cfg.device``: cpu | cuda | auto (cuda when available). On CUDA it also asks for deterministic kernels.

    Why: on CPU the same config and seed give bit-identical runs (tests/test_simulation.py). On a GPU they need not:
    cuDNN/cuBLAS may pick non-deterministic kernels, and an attacked trajectory amplifies 1-ulp differences until two
    runs doing identical maths end far apart (observed on an H100: docs/experiments/table13.md, "Paper scale on a GPU").
    So: cuDNN deterministic, no autotuning, torch's deterministic algorithms (warn, not fail, for ops without one)
    and cuBLAS's fixed workspace; ``benchmarks/cuda_determinism.py`` checks what they buy (its results:
    docs/results/gpu/).
    """
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)
        return torch.device("cuda")
    return torch.device("cpu")


def local_sgd(model, x, y, lr: float, steps: int = 1):
    """``steps`` plain SGD steps (no momentum) on one batch in train mode. Returns the mean loss.

    With lr = 1 and one step the client's update theta_k - theta_t is exactly -grad L, the raw gradient that
    the server's SGD (lr, momentum) then applies, as in the official federated harness.
    """
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    losses = []
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, g in zip(params, grads):
                p.sub_(lr * g)
        losses.append(float(loss.detach()))
    return float(np.mean(losses))


@torch.no_grad()
def evaluate(model, x_uint8, y, batch_size: int = 1000, device="cpu") -> tuple[float, float]:
    """(accuracy in percent, mean CE) on a uint8 NCHW array."""
    model.eval()
    correct, loss_sum = 0, 0.0
    for i in range(0, len(x_uint8), batch_size):
        xb = torch.as_tensor(x_uint8[i: i + batch_size]).to(device).float().div_(255.0)
        yb = torch.as_tensor(y[i: i + batch_size]).to(device)
        out = model(xb)
        loss_sum += float(F.cross_entropy(out, yb, reduction="sum"))
        correct += int((out.argmax(1) == yb).sum())
    n = len(x_uint8)
    return 100.0 * correct / n, loss_sum / n


def seed_all(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
