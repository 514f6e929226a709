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


def test_relative_links_point_at_files_that_exist():
    import re

    broken = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "docs/experiments").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken, broken


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    import re

    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_anchors_point_at_headings_that_exist():
    import re

    broken = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "docs/experiments").glob("*.md"))]:
        for target, anchor in re.findall(r"\]\(([^)#\s]*)#([^)\s]+)\)", page.read_text()):
            md = page if not target else page.parent / target
            if md.suffix != ".md" or not md.exists():
                continue
            heads = {slug(h) for h in re.findall(r"^#+ (.*)$", md.read_text(), re.M)}
            if anchor not in heads:
                broken.append(f"{page.relative_to(ROOT)} -> {target}#{anchor}")
    assert not broken, broken
