"""Client-side sample correction: DSC (Zhu et al. 2023, Sec. 3.4, Eq. 6, Algorithm 1) and AT.

DSC, per incoming batch (x, y), with the current model theta and the frozen historical model theta*::

    x~ <- x ; n <- 0
    while MD(x~) > P and n < K:                       # MD = KL(f(x~; theta*) || f(x~; theta)) per sample
        x~ <- Proj_{B_inf(x, eps)}( x~ - delta * sign(grad_x~ CE(f(x~; theta), y) ) ),  clamp to [0, 1]
        n <- n + 1

then one training step on (x~, y). eps = 0.2, delta = 0.02, K = 10. MD only gates; the correction descends the
current model's CE ("reverse PGD").

* ``per_sample=True`` (default, the paper's Algorithm 1): each sample stops on its own. Only samples still
  above P are forwarded and differentiated at the next step (their work is skipped, not masked), and the one
  forward of the current model per step serves both the MD test and the CE gradient.
* ``per_sample=False`` (the official code, ``GA_PGD_prune``): the stop test uses the batch-mean MD and all
  samples step together.
* The official code allows K = 10 steps (checked before each step); the paper's pseudo-code counts n from 1
  (K - 1 steps). We follow the code.

AT (Tao et al. 2021 as in the official code's ``GA_PGD``): the same reverse PGD on every sample for all K steps,
with loss CE(f(x~), y) + kl_weight * KL(f(x) || f(x~)) (KLDivLoss reduction 'mean', as in the code).

Models are put in eval mode for the correction (as the official code does).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .md import md_from_logits


def _project(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp_(0.0, 1.0)


def dsc_correct(model, hist_model, x, y, P: float, eps: float = 0.2, step_size: float = 0.02,
                max_steps: int = 10, per_sample: bool = True, measure: str = "kl"):
    """Discrepancy-aware sample correction. Returns ``(x_corrected, steps_per_sample, md_before)``."""
    model.eval()
    hist_model.eval()
    x = x.detach()
    x_adv = x.clone()
    steps = torch.zeros(len(x), dtype=torch.long)
    md_before = None
    active = torch.arange(len(x))
    for n in range(max_steps + 1):
        if len(active) == 0:
            break
        xa = x_adv[active].requires_grad_(True)
        with torch.no_grad():
            lh = hist_model(xa)
        lc = model(xa)
        md = md_from_logits(lh, lc.detach(), measure)
        if md_before is None:
            md_before = md.detach().clone()
        if per_sample:
            keep = md > P
        else:
            keep = torch.full_like(md, bool(md.mean() > P), dtype=torch.bool)
        if n == max_steps or not bool(keep.any()):
            break
        # sum (not mean) so the sign of each sample's gradient is independent of the batch size
        loss = F.cross_entropy(lc[keep], y[active][keep], reduction="sum")
        (g,) = torch.autograd.grad(loss, xa)
        idx = active[keep]
        with torch.no_grad():
            x_adv[idx] = _project(x_adv[idx] - step_size * g[keep].sign(), x[idx], eps)
        steps[idx] += 1
        active = idx
    return x_adv.detach(), steps, md_before


def dsc_correct_reference(model, hist_model, x, y, P, eps=0.2, step_size=0.02, max_steps=10, measure="kl"):
    """Plain per-sample loop of Algorithm 1 (one sample at a time). Used by tests to guard the fast path."""
    model.eval()
    hist_model.eval()
    outs, steps = [], []
    for i in range(len(x)):
        xi, yi = x[i: i + 1].detach(), y[i: i + 1]
        xa, n = xi.clone(), 0
        while n < max_steps:
            with torch.no_grad():
                md = md_from_logits(hist_model(xa), model(xa), measure)
            if not bool(md.item() > P):
                break
            xa.requires_grad_(True)
            (g,) = torch.autograd.grad(F.cross_entropy(model(xa), yi, reduction="sum"), xa)
            xa = _project(xa.detach() - step_size * g.sign(), xi, eps)
            n += 1
        outs.append(xa.detach())
        steps.append(n)
    return torch.cat(outs), torch.tensor(steps)


def at_correct(model, x, y, eps: float = 0.2, step_size: float = 0.02, max_steps: int = 10, kl_weight: float = 1.0):
    """Reverse-PGD correction of every sample for all steps (AT baseline)."""
    model.eval()
    x = x.detach()
    with torch.no_grad():
        p_nat = F.softmax(model(x), dim=1)
    x_adv = x.clone()
    for _ in range(max_steps):
        x_adv.requires_grad_(True)
        out = model(x_adv)
        loss = F.cross_entropy(out, y)
        if kl_weight:
            # KLDivLoss(reduction='mean') of the official code: mean over batch x classes
            kl = p_nat * (p_nat.clamp_min(1e-30).log() - F.log_softmax(out, dim=1))
            loss = loss + kl_weight * kl.mean()
        (g,) = torch.autograd.grad(loss, x_adv)
        x_adv = _project(x_adv.detach() - step_size * g.sign(), x, eps)
    return x_adv.detach()
