import math

import numpy as np
import pytest
import torch

from fl_mdisc.md import ProbeMD, auroc, fit_threshold, md_from_logits, md_per_sample, threshold
from fl_mdisc.models import get_params

from .conftest import TinyNet


class TestMemorizationDiscrepancy:
    def test_zero_for_identical_models(self):
        m = TinyNet(0)
        x = torch.rand(20, 3, 8, 8)
        md = md_per_sample(m, m, x)
        assert md.shape == (20,)
        assert torch.allclose(md, torch.zeros(20), atol=1e-6)

    def test_matches_hand_computation(self):
        lh = torch.tensor([[math.log(0.8), math.log(0.2)]])
        lc = torch.tensor([[math.log(0.5), math.log(0.5)]])
        expected = 0.8 * math.log(0.8 / 0.5) + 0.2 * math.log(0.2 / 0.5)  # KL(hist || cur)
        assert md_from_logits(lh, lc).item() == pytest.approx(expected, rel=1e-6)
        # direction matters: KL(cur || hist) is a different number
        assert md_from_logits(lc, lh).item() != pytest.approx(expected, rel=1e-3)

    def test_js_is_symmetric_and_bounded(self):
        a, b = torch.randn(50, 10), torch.randn(50, 10) * 3
        js_ab, js_ba = md_from_logits(a, b, "js"), md_from_logits(b, a, "js")
        assert torch.allclose(js_ab, js_ba, atol=1e-6)
        assert (js_ab >= -1e-7).all() and (js_ab <= math.log(2) + 1e-6).all()

    def test_unknown_measure(self):
        with pytest.raises(ValueError, match="kl or js"):
            md_from_logits(torch.zeros(1, 2), torch.zeros(1, 2), "l2")

    def test_probe_md_equals_direct_computation(self):
        hist, cur = TinyNet(1), TinyNet(2)
        x = torch.rand(30, 3, 8, 8)
        probe = ProbeMD(TinyNet(0), x, get_params(hist))
        (val,) = probe([get_params(cur)])
        assert val == pytest.approx(float(md_per_sample(hist, cur, x).mean()), rel=1e-5)


class TestThreshold:
    def test_schedule(self):
        assert threshold(0.5, 0.02, 10) == pytest.approx(0.7)

    def test_fit_recovers_line_and_bounds_points(self):
        s = np.arange(50)
        v = 0.6 + 0.01 * s + np.random.default_rng(0).normal(0, 0.01, 50)
        mu, tau = fit_threshold(s, v)
        assert tau == pytest.approx(0.01, abs=0.002)
        assert np.all(v <= mu + tau * s + 1e-12)

    def test_negative_slope_clipped(self):
        mu, tau = fit_threshold([0, 1, 2], [3.0, 2.0, 1.0])
        assert tau == 0.0 and mu == 3.0


class TestAuroc:
    def test_values(self):
        assert auroc([3, 4], [1, 2]) == 1.0
        assert auroc([1, 2], [3, 4]) == 0.0
        assert auroc([1, 2], [1, 2]) == 0.5
