import torch

from fl_mdisc.attack import (_normed, alignment, craft_poison, craft_trigger, lambda_update_grad, param_grads,
                             poison_objective, reversed_trigger_grad, second_order_term)

from .conftest import TinyNet


def _batches():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(32, 3, 8, 8, generator=g)
    y = torch.randint(0, 4, (32,), generator=g)
    xt = torch.rand(16, 3, 8, 8, generator=g)
    yt = torch.randint(0, 4, (16,), generator=g)
    xv = torch.rand(48, 3, 8, 8, generator=g)
    yv = torch.randint(0, 4, (48,), generator=g)
    return x, y, xt, yt, xv, yv


class TestAlignment:
    def test_sum_of_per_tensor_cosines(self):
        a = [torch.tensor([1.0, 0.0]), torch.tensor([[1.0, 1.0]])]
        b = [torch.tensor([1.0, 0.0]), torch.tensor([[-1.0, -1.0]])]
        assert abs(alignment(a, b).item()) < 1e-6  # +1 and -1
        assert abs(alignment(a, a).item() - 2.0) < 1e-6


class TestTrigger:
    def test_trigger_lowers_alignment_within_eps(self):
        m = TinyNet(3)
        _, _, xt, yt, xv, yv = _batches()
        gv = param_grads(m, xv, yv)
        before = alignment(param_grads(m, xt, yt), gv).item()
        xa = craft_trigger(m, xt, yt, xv, yv, eps=0.2, step_size=0.2, steps=2)
        after = alignment(param_grads(m, xa, yt), gv).item()
        assert after < before
        assert (xa - xt).abs().max() <= 0.2 + 1e-6 and xa.min() >= 0 and xa.max() <= 1


class TestPoison:
    def test_poison_batch_raises_the_objective_it_ascends(self):
        m = TinyNet(4)
        x, y, xt, yt, xv, yv = _batches()
        h = second_order_term(m, xt, yt, xv, yv)
        gc_n = _normed(list(param_grads(m, x, y)))
        j_clean = poison_objective(m, x, y, gc_n, _normed(h)).item()
        xp = craft_poison(m, x, y, h, eps=0.2, step_size=0.2, steps=2)
        j_poison = poison_objective(m, xp, y, gc_n, _normed(h)).item()
        assert j_poison > j_clean
        assert (xp - x).abs().max() <= 0.2 + 1e-6

    def test_h_once_per_round_equals_recomputing_it_every_pgd_step(self):
        # craft_poison reuses h (and the clean gradient) across its PGD steps: exact, because both depend on
        # theta only, which PGD does not change. The plain loop recomputes them at every step.
        from fl_mdisc.attack import _pgd_step
        m = TinyNet(5)
        x, y, xt, yt, xv, yv = _batches()
        fast = craft_poison(m, x, y, second_order_term(m, xt, yt, xv, yv), eps=0.2, step_size=0.2, steps=2)
        x_adv = x.clone()
        for _ in range(2):
            h_n = _normed(second_order_term(m, xt, yt, xv, yv))
            gc_n = _normed([g.detach() for g in param_grads(m, x, y)])
            x_adv.requires_grad_(True)
            (gx,) = torch.autograd.grad(poison_objective(m, x_adv, y, gc_n, h_n), x_adv)
            x_adv = _pgd_step(x_adv, x, gx, 0.2, 0.2, sign=+1.0)
        assert torch.equal(fast, x_adv)

    def test_second_order_term_is_gradient_of_alignment(self):
        m = TinyNet(4)
        _, _, xt, yt, xv, yv = _batches()
        h = second_order_term(m, xt, yt, xv, yv)
        # directional finite difference along h: A(theta + s h) - A(theta) ~ s ||h||^2
        a0 = alignment(param_grads(m, xt, yt), param_grads(m, xv, yv)).item()
        s = 1e-3
        with torch.no_grad():
            for p, hh in zip(m.parameters(), h):
                p.add_(s * hh)
        a1 = alignment(param_grads(m, xt, yt), param_grads(m, xv, yv)).item()
        sq = sum(float((hh ** 2).sum()) for hh in h)
        assert abs((a1 - a0) / s - sq) < 0.05 * sq


class TestHarness:
    def test_lambda_update_scales_linearly_and_reversed_trigger(self):
        m = TinyNet(6)
        _, _, xt, yt, xv, yv = _batches()
        g1 = lambda_update_grad(m, xt, yt, xv, yv, 1.0)
        g4 = lambda_update_grad(m, xt, yt, xv, yv, 4.0)
        assert all(torch.allclose(4 * a, b, atol=1e-6) for a, b in zip(g1, g4))
        gt = reversed_trigger_grad(m, xt, yt, 0.01)
        assert all(torch.allclose(a, -0.01 * b) for a, b in zip(gt, param_grads(m, xt, yt)))


class TestMdAwarePoison:
    """The seed paper's adaptive attacker (appendix C.12, Eq. 21) and our direct-evasion form."""

    @staticmethod
    def _setup():
        m, hist = TinyNet(6), TinyNet(7)
        x, y, xt, yt, xv, yv = _batches()
        return m, hist, x, y, second_order_term(m, xt, yt, xv, yv)

    @staticmethod
    def _md(m, hist, xx):
        from fl_mdisc.md import md_from_logits
        with torch.no_grad():
            return float(md_from_logits(hist(xx), m(xx)).mean())

    def test_beta_zero_is_the_original_attack_bit_for_bit(self):
        m, hist, x, y, h = self._setup()
        base = craft_poison(m, x, y, h, eps=0.2, step_size=0.2, steps=2)
        for form in ("paper", "input"):
            assert torch.equal(craft_poison(m, x, y, h, 0.2, 0.2, 2, beta=0.0, hist_model=hist, md_form=form), base)

    def test_paper_form_ascends_eq21_by_hand(self):
        # one PGD step by hand: J_beta = sum_p <n(g_P), gamma n(g_C) + beta n(m) + n(h)>, m = grad_theta L_MD(x)
        from fl_mdisc.attack import _pgd_step, md_param_grad
        from fl_mdisc.md import md_from_logits
        m, hist, x, y, h = self._setup()
        beta = 0.3
        got = craft_poison(m, x, y, h, 0.2, 0.2, 1, beta=beta, hist_model=hist)
        loss_md = md_from_logits(hist(x).detach(), m(x)).mean()
        mm = torch.autograd.grad(loss_md, [p for p in m.parameters()])
        assert all(torch.allclose(a, b) for a, b in zip(mm, md_param_grad(m, hist, x)))
        gc = [g / g.norm() for g in param_grads(m, x, y)]
        hn, mn = [t / t.norm() for t in h], [t / t.norm() for t in mm]
        xa = x.clone().requires_grad_(True)
        gp = torch.autograd.grad(torch.nn.functional.cross_entropy(m(xa), y), list(m.parameters()), create_graph=True)
        j = sum(((g / g.norm()) * (c + beta * d.detach() + e)).sum() for g, c, d, e in zip(gp, gc, mn, hn))
        (gx,) = torch.autograd.grad(j, xa)
        assert torch.allclose(got, _pgd_step(xa.detach(), x, gx, 0.2, 0.2, sign=+1.0))

    def test_paper_form_keeps_the_model_near_theta_star_after_the_step(self):
        # what Eq. 21's term does (measured on the CIFAR model too): a step on the beta batch moves the model's
        # outputs on the batch less away from theta* than a step on the beta = 0 batch
        import copy
        from fl_mdisc.train import local_sgd
        m, hist, x, y, h = self._setup()
        after = []
        for beta in (0.0, 5.0):
            xp = craft_poison(m, x, y, h, 0.2, 0.2, 2, beta=beta, hist_model=hist)
            m2 = copy.deepcopy(m)
            local_sgd(m2, xp, y, 0.5, 1)
            after.append(self._md(m2, hist, xp))
        assert after[1] < after[0]

    def test_input_form_lowers_the_batch_md_at_arrival(self):
        m, hist, x, y, h = self._setup()
        mds = [self._md(m, hist, craft_poison(m, x, y, h, 0.2, 0.2, 2, beta=b, hist_model=hist, md_form="input"))
               for b in (0.0, 100.0)]
        assert mds[1] < mds[0]

    def test_needs_the_historical_model_and_a_known_form(self):
        import pytest
        m, hist, x, y, h = self._setup()
        with pytest.raises(ValueError, match="historical model"):
            craft_poison(m, x, y, h, beta=0.1)
        with pytest.raises(ValueError, match="md_form"):
            craft_poison(m, x, y, h, beta=0.1, hist_model=hist, md_form="other")
