import pytest
import torch

from fl_mdisc.correction import at_correct, dsc_correct, dsc_correct_reference
from fl_mdisc.md import md_per_sample

from .conftest import TinyNet


def _setup(n=40):
    cur, hist = TinyNet(0).double(), TinyNet(5).double()
    x = torch.rand(n, 3, 8, 8, dtype=torch.float64)
    y = torch.randint(0, 4, (n,))
    return cur, hist, x, y


class TestDSC:
    def test_untouched_when_md_below_threshold(self):
        cur, hist, x, y = _setup()
        P = float(md_per_sample(hist, cur, x).max()) + 1.0
        xc, steps, _ = dsc_correct(cur, hist, x, y, P)
        assert torch.equal(xc, x)
        assert int(steps.sum()) == 0

    def test_stays_in_eps_ball_and_pixel_range(self):
        cur, hist, x, y = _setup()
        xc, steps, _ = dsc_correct(cur, hist, x, y, P=0.0, eps=0.05, step_size=0.02, max_steps=10)
        assert (xc - x).abs().max() <= 0.05 + 1e-12
        assert xc.min() >= 0 and xc.max() <= 1
        assert int(steps.max()) == 10  # MD never reaches 0, so every sample takes all steps

    def test_per_sample_fast_path_equals_plain_loop(self):
        cur, hist, x, y = _setup()
        md0 = md_per_sample(hist, cur, x)
        P = float(md0.median())  # about half the samples need correcting
        fast, steps_fast, md_before = dsc_correct(cur, hist, x, y, P)
        ref, steps_ref = dsc_correct_reference(cur, hist, x, y, P)
        assert torch.equal(steps_fast, steps_ref)
        assert torch.allclose(fast, ref, atol=1e-12)
        assert torch.allclose(md_before, md0, atol=1e-10)
        assert 0 < int((steps_fast > 0).sum()) < len(x)

    def test_correction_lowers_current_loss(self):
        cur, hist, x, y = _setup()
        xc, _, _ = dsc_correct(cur, hist, x, y, P=0.0, eps=0.2)
        ce = torch.nn.functional.cross_entropy
        assert ce(cur(xc), y) < ce(cur(x), y)

    def test_batch_mode_moves_all_samples_together(self):
        cur, hist, x, y = _setup()
        P = float(md_per_sample(hist, cur, x).mean()) - 1e-9
        _, steps, _ = dsc_correct(cur, hist, x, y, P, per_sample=False, max_steps=3)
        assert len(set(steps.tolist())) == 1 and steps[0] >= 1


class TestAT:
    def test_all_samples_all_steps_in_ball(self):
        cur, _, x, y = _setup()
        xa = at_correct(cur, x, y, eps=0.1, step_size=0.02, max_steps=10)
        assert (xa - x).abs().max() <= 0.1 + 1e-12
        assert ((xa - x).abs().flatten(1).max(1).values > 0).all()
