"""The README and the documentation pages, for the tests that run what they show."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"


def documentation_pages():
    """The README, then every Markdown page under ``docs/`` in a stable order."""
    return [REPO / "README.md", *sorted(DOCS.rglob("*.md"))]


def documentation_text():
    """The text of every page of :func:`documentation_pages`, one after another."""
    return "\n".join(page.read_text(encoding="utf-8") for page in documentation_pages())
