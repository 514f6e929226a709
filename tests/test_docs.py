"""Every generated table in README.md and docs/ is what `fl-mdisc docs` gives from the committed result files."""

from pathlib import Path

import pytest

from app.docs import BLOCKS, docs, render

ROOT = Path(__file__).resolve().parent.parent


def test_committed_pages_equal_their_result_files():
    stale = docs(ROOT, check=True)
    assert not stale, f"run `fl-mdisc docs`: these pages differ from docs/results/: {stale}"


def test_blocks_are_regenerated_and_unknown_ones_refused(tmp_path):
    text = "a\n<!-- generated:summary -->\nstale\n<!-- /generated:summary -->\nb\n"
    new = render(text, ROOT)
    assert "stale" not in new and "| protocol |" in new and new.startswith("a\n") and new.endswith("b\n")
    assert render(new, ROOT) == new
    with pytest.raises(KeyError, match="unknown generated block"):
        render("<!-- generated:nope -->\n<!-- /generated:nope -->", ROOT)
    assert set(BLOCKS) >= {"summary", "grid-history-accuracy"}
