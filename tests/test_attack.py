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
