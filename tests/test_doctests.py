"""The examples in the core's docstrings (the maths of each rule, ByzFL-style) run as written."""

import doctest
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODULES = sorted(f"{p.parent.name}.{p.stem}" for d in ("fl_mdisc", "strategies", "app")
                 for p in (ROOT / d).glob("*.py") if ">>> " in p.read_text())


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0, result


def test_the_maths_modules_carry_examples():
    assert {"fl_mdisc.history", "fl_mdisc.scoring", "fl_mdisc.updates"} <= set(MODULES)
