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


def _leaves(d, pre=""):
    for k, v in (d or {}).items():
        if isinstance(v, dict) and v:
            yield from _leaves(v, f"{pre}{k}.")
        elif k != "defaults":
            yield pre + str(k)


def test_the_configuration_page_covers_every_file_and_key_of_conf():
    import yaml

    from app.docs import yaml_keys

    page = (ROOT / "docs/config.md").read_text()
    for f in sorted((ROOT / "conf").rglob("*.yaml")):
        rel = f.relative_to(ROOT).as_posix()
        assert f"<!-- generated:config:{rel} -->" in page, f"docs/config.md has no block for {rel}"
        parsed = {k for k, _, _ in yaml_keys(f.read_text())}
        assert set(_leaves(yaml.safe_load(f.read_text()))) <= parsed, rel  # the page misses no key


def test_yaml_keys_reads_nesting_comments_and_flow_lists():
    from app.docs import yaml_keys

    text = "defaults:\n  - a: b\nx: 1  # one\ny:\n  z: [p,\n      q]   # z's\n  w: 'u'\n"
    assert yaml_keys(text) == [("x", "1", "one"), ("y", "", ""), ("y.z", "[p, q]", "z's"), ("y.w", "'u'", "")]


def test_every_committed_figure_is_redrawn_and_shown():
    """A committed PNG (outside cells) is one `fl-mdisc docs` redraws (the check above compares its pixels), and a
    page shows it."""
    import re

    from app.docs import FIGURES

    committed = {str(p.relative_to(ROOT)) for p in (ROOT / "docs/results").rglob("*.png") if "cells" not in p.parts}
    assert committed == set(FIGURES), f"not redrawn: {committed - set(FIGURES)}; missing: {set(FIGURES) - committed}"
    shown = set()
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "docs/experiments").glob("*.md"))]:
        for target in re.findall(r"!\[[^\]]*\]\(([^)\s]+\.png)\)", page.read_text()):
            shown.add(str((page.parent / target).resolve().relative_to(ROOT)))
    assert set(FIGURES) <= shown, f"committed but shown by no page: {set(FIGURES) - shown}"


def test_a_changed_figure_is_found(tmp_path):
    """same_image: identical pixels pass, a drawn difference fails."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from app.docs import same_image

    paths = []
    for i, y in enumerate(([1, 2, 3], [1, 2, 3], [1, 2.5, 3])):
        fig, ax = plt.subplots(figsize=(3, 2))
        ax.plot(y)
        fig.savefig(tmp_path / f"{i}.png", dpi=50)
        plt.close(fig)
        paths.append(tmp_path / f"{i}.png")
    assert same_image(paths[0], paths[1]) and not same_image(paths[0], paths[2])


def test_grid_status_line_lists_what_is_missing_and_says_when_nothing_is(tmp_path):
    import json

    from app.docs import grid_not_run

    folder = tmp_path / "docs/results/grid-history"
    (folder / "cells" / "a-clean-gc-s0").mkdir(parents=True)
    doc = {"per_seed": [{"seed": 0}], "not_run": ["a-clean-gc-s1"]}
    (folder / "grid.json").write_text(json.dumps(doc))
    assert "not run yet: 1 cells" in grid_not_run(tmp_path) and "Complete cells: 1;" in grid_not_run(tmp_path)
    (folder / "grid.json").write_text(json.dumps({**doc, "not_run": []}))
    assert grid_not_run(tmp_path) == ("Complete cells: 1; burn-in seeds [0], every cell of the report's command "
                                      "complete.\n")
