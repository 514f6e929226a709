"""Accumulative poisoning (Pang et al., "Accumulative Poisoning Attacks on Real-time Data", NeurIPS 2021).

Notation: L(S) = mean CE of batch S; g_S = grad_theta L(S) (a tuple, one tensor per parameter p);
n(v) = v / ||v||_2 on one flattened tensor; cos_p = per-tensor cosine.

* Alignment (Pang's online code)::   A(theta) = sum_p cos(g_T[p], g_V[p])
  between the trigger batch S_T and the attacker's validation batch S_V.
* Trigger crafting (once, at the start): 2 steps of L_inf PGD (eps 0.2, step 0.2) *descending* A w.r.t. x_T.
* Poison batch at step t, from the clean batch (x_t, y_t), labels unchanged: 2 steps of L_inf PGD
  (eps 0.2, step 0.2) *ascending*::

      J(x~) = sum_p < n(g_P[p]), gamma * n(g_C[p]) + n(h[p]) >,   g_P = grad_theta L(x~, y_t),
      g_C = grad_theta L(x_t, y_t),   h = grad_theta A(theta_t)  (second-order term, double back-prop).

  h and g_C depend only on theta_t, so they are computed once per round and reused across the PGD steps
  (as the official ``craft_accu`` does).
* MD-aware poison (the seed paper's adaptive attacker, Zhu et al. 2023, appendix C.12, Eq. 21; Table 3): the
  bracket gains a third term, beta * grad_theta L_MD, with L_MD = D(f(x~; theta*), f(x~; theta_t)) the mean KL
  Memorization Discrepancy of the poison batch against the historical model theta* that DSC uses::

      J_beta(x~) = sum_p < n(g_P[p]), gamma * n(g_C[p]) + beta * n(m[p]) + n(h[p]) >,
      m = grad_theta L_MD(x~; theta_t)   (recomputed at the current x~ in every PGD step, then held fixed).

  Maximising < g_P, m > makes the training step on x~ (theta <- theta - eta g_P) lower L_MD of the batch: the
  attacker keeps the model close to theta* on its poison samples. The sign follows the paper's other terms
  (Eq. 20's "keep accuracy" maximises < g_P, g_C > so that the step also lowers the clean loss). The paper gives
  no code for it (the official repository has none); where the paper's formula leaves a choice we take the one
  of the official ``craft_accu`` for the other terms: per-tensor normalisation, m treated like h (no
  differentiation through it). beta = 0 is the original attack, bit for bit (the term is not even computed).
  Measured (small CNN, theta_start vs the burn-in's theta*, one batch of 100): this term does *not* lower the batch's
  MD at arrival (2.84 at beta 0; 3.02 / 3.50 / 3.29 / 4.81 at beta 0.05 / 0.1 / 0.2 / 1), the quantity DSC
  thresholds; it lowers the MD of the model *after* a step on the batch (on held-out clean data 11.2 -> 9.7 -> 7.4
  -> 7.5 -> 1.4), i.e. it holds the model near theta*, which is also what blunts the attack (the paper's Delta).
  ``md_form="input"`` (ours) is the direct evasion instead: PGD ascends J - beta * L_MD(x~) w.r.t. x~, so the
  batch's own MD at arrival is pushed down.
* Federated harness (Pang's ``feder_accu_train.py``): the attacker's whole update is the gradient
  ``lam * grad_theta cos(-g_T, g_V)`` with ONE global cosine over all parameters concatenated (not per
  tensor, unlike the online code); the server applies it with SGD. The final trigger is one
  gradient-ascent step on S_T scaled by s = 0.01.
* Transferable strength (ours, not in either paper): lam is a constant fitted to one model and one burn-in;
  on another burn-in the same lam can be harmless or drive training to chance. With ``norm_multiple = k``
  the attacker keeps the lambda-update's *direction* and sets its norm every round to k times the norm of
  the update an honest client would send from its own clean stream batch at theta_t (which it can compute:
  it has clean data and knows the protocol)::

      Delta_att = k * ||Delta_honest(theta_t)||_2 * g_lam / ||g_lam||_2

  and the same for the trigger round. k means the same on any burn-in, model or machine: k < 1 stays
  inside the honest spread, k > 1 is what a norm clip at the honest median (GC) cuts back.

Deliberate differences from the official code (DESIGN.md section 3): the attacker's validation and trigger
batches come from its own data, never from the evaluation test set; streams are shuffled; crafting runs in
eval mode and never touches BatchNorm running statistics of the global model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _params(model):
    return [p for p in model.parameters() if p.requires_grad]


def param_grads(model, x, y, create_graph: bool = False):
    """g = grad_theta mean CE(f(x; theta), y), one tensor per trainable parameter."""
    loss = F.cross_entropy(model(x), y)
    return torch.autograd.grad(loss, _params(model), create_graph=create_graph)


def alignment(g_a, g_b) -> torch.Tensor:
    """A = sum_p cos(g_a[p], g_b[p]) (sum of per-tensor cosine similarities)."""
    return sum(F.cosine_similarity(a.flatten(), b.flatten(), dim=0, eps=1e-12) for a, b in zip(g_a, g_b))


def _normed(g):
    return [t / t.norm().clamp_min(1e-12) for t in g]


def _pgd_step(x_adv, x, grad, step, eps, sign):
    return torch.min(torch.max(x_adv + sign * step * grad.sign(), x - eps), x + eps).clamp(0.0, 1.0).detach()


def craft_trigger(model, x_t, y_t, x_v, y_v, eps=0.2, step_size=0.2, steps=2):
    """Adversarial trigger: PGD *descending* A(theta) = sum_p cos(g_T[p], g_V[p]) w.r.t. the trigger inputs."""
    model.eval()
    g_v = [g.detach() for g in param_grads(model, x_v, y_v)]
    x_adv = x_t.clone().detach()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        a = alignment(param_grads(model, x_adv, y_t, create_graph=True), g_v)
        (gx,) = torch.autograd.grad(a, x_adv)
        x_adv = _pgd_step(x_adv, x_t, gx, step_size, eps, sign=-1.0)
    return x_adv


def second_order_term(model, x_t, y_t, x_v, y_v):
    """h = grad_theta A(theta), A = sum_p cos(g_T[p], g_V[p]) (double back-prop through both gradients)."""
    model.eval()
    a = alignment(param_grads(model, x_t, y_t, create_graph=True), param_grads(model, x_v, y_v, create_graph=True))
    return [h.detach() for h in torch.autograd.grad(a, _params(model))]


def poison_objective(model, x_adv, y, g_clean_n, h_n, gamma=1.0, create_graph=False, md_n=None, beta=0.0):
    """J = sum_p < n(g_P[p]), gamma * n(g_C[p]) + n(h[p]) > (inputs already normalised); with ``md_n`` (the
    normalised grad_theta L_MD) and beta > 0 the bracket gains beta * n(m[p]) (Eq. 21)."""
    g_p = _normed(param_grads(model, x_adv, y, create_graph=True))
    if md_n is None or beta == 0.0:
        return sum((gp * (gamma * gc + hh)).sum() for gp, gc, hh in zip(g_p, g_clean_n, h_n))
    return sum((gp * (gamma * gc + beta * mm + hh)).sum() for gp, gc, mm, hh in zip(g_p, g_clean_n, md_n, h_n))


def md_param_grad(model, hist_model, x, measure: str = "kl"):
    """m = grad_theta L_MD, L_MD = mean_x D(f(x; theta*), f(x; theta_t)) (theta* = ``hist_model``, held fixed)."""
    from .md import md_from_logits

    with torch.no_grad():
        hist_logits = hist_model(x)
    loss = md_from_logits(hist_logits, model(x), measure).mean()
    return [g.detach() for g in torch.autograd.grad(loss, _params(model))]


MD_FORMS = ("paper", "input")


def craft_poison(model, x, y, h, eps=0.2, step_size=0.2, steps=2, gamma=1.0, beta=0.0, hist_model=None,
                 md_form: str = "paper"):
    """Poison batch: PGD *ascending* J from the clean batch (x, y), labels unchanged.

    ``h`` is the second-order term at the current parameters (see :func:`second_order_term`). With ``beta`` > 0
    and the historical model theta* (``hist_model``) the objective is Eq. 21's J_beta (``md_form="paper"``) or
    J - beta * L_MD(x~) (``md_form="input"``); module docstring.
    """
    if md_form not in MD_FORMS:
        raise ValueError(f"unknown md_form {md_form!r}; choose one of {MD_FORMS}")
    if beta and hist_model is None:
        raise ValueError("the MD-aware poison (beta > 0) needs the historical model theta*")
    from .md import md_from_logits

    model.eval()
    if beta:
        hist_model.eval()
    g_c_n = _normed([g.detach() for g in param_grads(model, x, y)])
    h_n = _normed(h)
    x_adv = x.clone().detach()
    for _ in range(steps):
        paper = bool(beta) and md_form == "paper"
        md_n = _normed(md_param_grad(model, hist_model, x_adv)) if paper else None
        x_adv.requires_grad_(True)
        j = poison_objective(model, x_adv, y, g_c_n, h_n, gamma, md_n=md_n, beta=float(beta) if paper else 0.0)
        if beta and md_form == "input":
            with torch.no_grad():
                hist_logits = hist_model(x_adv)
            j = j - float(beta) * md_from_logits(hist_logits, model(x_adv)).mean()
        (gx,) = torch.autograd.grad(j, x_adv)
        x_adv = _pgd_step(x_adv, x, gx, step_size, eps, sign=+1.0)
    return x_adv


def lambda_update_grad(model, x_t, y_t, x_v, y_v, lam: float):
    """Pang's harness aggregate: lam * grad_theta cos(-g_T, g_V), one global cosine (train mode, as the code)."""
    model.train()
    u = param_grads(model, x_t, y_t, create_graph=True)
    v = param_grads(model, x_v, y_v, create_graph=True)
    uf = -torch.cat([t.flatten() for t in u])
    vf = torch.cat([t.flatten() for t in v])
    c = F.cosine_similarity(uf, vf, dim=0, eps=1e-12)
    return [lam * g.detach() for g in torch.autograd.grad(c, _params(model))]


def grads_norm(g) -> float:
    """||g||_2 over all tensors concatenated."""
    return float(torch.sqrt(sum((t.double() ** 2).sum() for t in g)))


def scale_to_norm(g, target: float):
    """The same direction with L2 norm ``target`` (zero stays zero)."""
    n = grads_norm(g)
    return [t * (target / n) for t in g] if n > 0 else list(g)


def reversed_trigger_grad(model, x_t, y_t, scale: float):
    """Harness trigger: the gradient of -scale * L(S_T) (one gradient-ascent step on the trigger batch)."""
    model.train()
    return [-scale * g.detach() for g in param_grads(model, x_t, y_t)]
