"""docs/extending.md's worked examples run as written."""

import re
import shlex
from pathlib import Path

import numpy as np
from flwr.serverapp.strategy import FedAvg

from .flwr_helpers import prime, reply

DOC = (Path(__file__).resolve().parent.parent / "docs" / "extending.md").read_text()


def test_the_defence_example_clips_to_the_median_norm():
    code = re.search(r"```python\n(.*?)```", DOC, re.S).group(1)
    ns: dict = {}
    exec(code, ns)  # noqa: S102 - the page's own example
    s = ns["MedianNormClipping"](FedAvg(fraction_evaluate=0.0, min_available_nodes=3, min_train_nodes=3), clip_norm=1.0)
    prime(s, [np.zeros(2)])
    arrays, _ = s.aggregate_train(1, [reply([[1, 0]], 0), reply([[0, 2]], 1), reply([[30, 40]], 2)])
    np.testing.assert_allclose(arrays.to_numpy_ndarrays()[0], [(1 + 1.2) / 3, (2 + 1.6) / 3], rtol=1e-6)


def test_the_grid_setting_example_builds_valid_cells(tmp_path):
    from app.grid import grid_cells

    cmd = re.search(r"fl-mdisc grid (preset=cpu .*?)\n```", DOC, re.S).group(1).replace("\\\n", " ")
    args = [a for a in shlex.split(cmd) if not a.startswith(("out_dir=", "sweep.parallel="))]
    plan = grid_cells(args + [f"out_dir={tmp_path}"])
    assert [c["name"] for c in plan["cells"]] == ["dir03-n20-clean-gc-s0", "dir03-n20-clean-dgc-s0",
                                                  "dir03-n20-poisoned-gc-s0", "dir03-n20-poisoned-dgc-s0"]
    assert "fed.dirichlet_alpha=0.3" in plan["cells"][0]["overrides"]
