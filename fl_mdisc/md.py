"""Memorization Discrepancy (Zhu et al., ICML 2023, Def. 3.3 / Eq. 5) and its threshold schedule.

Per sample x, with a frozen historical model theta_hist and the current model theta (temperature 1)::

    MD(x) = KL( softmax f(x; theta_hist) || softmax f(x; theta) )
          = sum_c p_hist,c(x) * (log p_hist,c(x) - log p_cur,c(x))

(the official code: ``KLDivLoss(reduction='none')(log_softmax(cur), softmax(hist)).sum(1)``). The paper's
alternative measure (Fig. 7) is Jensen-Shannon: JS = KL(p_h || m)/2 + KL(p_c || m)/2 with m = (p_h + p_c)/2.

Threshold (Sec. 4.1): P = mu + tau * m, m the batch (round) count since the phase began. The paper's
mu = 0.5, tau = 0.02 are calibrated for ResNet-18 epoch 20 vs epoch 40; :func:`fit_threshold` estimates
(mu, tau) from clean MD values along a clean trajectory (tau = least-squares slope, mu = max of the
detrended values), as DESIGN.md section 5 prescribes; the estimate is recorded by the caller.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def md_from_logits(logits_hist: torch.Tensor, logits_cur: torch.Tensor, measure: str = "kl") -> torch.Tensor:
    """Per-sample discrepancy (shape ``(N,)``) between historical and current logits."""
    lp_h = F.log_softmax(logits_hist, dim=1)
    lp_c = F.log_softmax(logits_cur, dim=1)
    if measure == "kl":
        return (lp_h.exp() * (lp_h - lp_c)).sum(1)
    if measure == "js":
        p_h, p_c = lp_h.exp(), lp_c.exp()
        lm = (0.5 * (p_h + p_c)).clamp_min(1e-30).log()
        return 0.5 * (p_h * (lp_h - lm)).sum(1) + 0.5 * (p_c * (lp_c - lm)).sum(1)
    raise ValueError(f"unknown measure {measure!r}; choose kl or js")


@torch.no_grad()
def md_per_sample(hist_model: torch.nn.Module, model: torch.nn.Module, x: torch.Tensor,
                  measure: str = "kl", batch_size: int = 1000) -> torch.Tensor:
    """MD of every sample of ``x`` between ``hist_model`` and ``model`` (both put in eval mode)."""
    hist_model.eval()
    model.eval()
    out = []
    for i in range(0, len(x), batch_size):
        xb = x[i: i + batch_size]
        out.append(md_from_logits(hist_model(xb), model(xb), measure))
    return torch.cat(out) if out else torch.zeros(0)


def threshold(mu: float, tau: float, m: float) -> float:
    """P = mu + tau * m."""
    return float(mu) + float(tau) * float(m)


def fit_threshold(steps, values) -> tuple[float, float]:
    """Estimate (mu, tau) from clean MD ``values`` observed at ``steps``.

    tau = least-squares slope (clipped at 0: a schedule never shrinks), mu = max_i (v_i - tau * s_i), so
    every calibration point lies on or below the fitted line.
    """
    s = np.asarray(steps, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if len(s) < 2 or np.ptp(s) == 0:
        return float(v.max()), 0.0
    tau = max(0.0, float(np.polyfit(s, v, 1)[0]))
    mu = float(np.max(v - tau * s))
    return mu, tau


def auroc(pos, neg) -> float:
    """Area under the ROC curve of scores ``pos`` (positives) vs ``neg`` (ties count 1/2)."""
    pos = np.asarray(pos, dtype=np.float64)
    neg = np.asarray(neg, dtype=np.float64)
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


class ProbeMD:
    """Server-side MD of candidate models on a fixed clean probe set (used by DGC).

    The historical model's probe outputs are computed once (per historical model); each candidate costs one
    forward pass of the probe set.
    """

    def __init__(self, model: torch.nn.Module, probe_x: torch.Tensor, hist_params, measure: str = "kl",
                 batch_size: int = 1000) -> None:
        from .models import set_params

        self._set_params = set_params
        self.model = model.eval()
        self.x = probe_x
        self.measure = measure
        self.batch_size = batch_size
        self.hist_logits = None
        self.set_hist(hist_params)

    @torch.no_grad()
    def _logits(self, params) -> torch.Tensor:
        self._set_params(self.model, params)
        return torch.cat([self.model(self.x[i: i + self.batch_size]) for i in range(0, len(self.x), self.batch_size)])

    def set_hist(self, hist_params) -> None:
        self.hist_logits = self._logits(hist_params)

    def __call__(self, candidates) -> list[float]:
        return [float(md_from_logits(self.hist_logits, self._logits(p), self.measure).mean()) for p in candidates]
