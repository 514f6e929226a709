"""What the benchmarks that read finished cells share: their command line and how they write their Markdown."""
from __future__ import annotations

import argparse
from pathlib import Path


def folder_args(doc: str, folder: str = "grid") -> argparse.Namespace:
    """``FOLDER [--markdown OUT.md]``, described by the first line of the benchmark's docstring."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument(folder)
    ap.add_argument("--markdown")
    return ap.parse_args()


def emit(lines: list[str], markdown: str | None) -> None:
    """Print the lines, and write them to ``markdown`` when given."""
    text = "\n".join(lines) + "\n"
    print(text)
    if markdown:
        Path(markdown).write_text(text)
