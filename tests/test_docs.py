"""The documentation: the site builds without a warning, and the README stays a five-minute read.

``mkdocs build --strict`` fails on any warning: a link to a missing page or
anchor, a page left out of the navigation, a module of an API page that does not
exist, a docstring griffe cannot parse.
"""

import re
import subprocess
import sys

import pytest

from tests.docs_pages import REPO

README_MAX_LINES = 200
# Markdown links and images: [text](target), the target up to a space or ")".
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
# A docs page (and anchor) cited from the README, the YAMLs or the code: docs/age.md#gender.
DOCS_REFERENCE = re.compile(r"docs/([\w-]+)\.md(?:#([\w-]+))?")
# The files of the original project's notes, which are not part of this repository;
# SPEC as a Python name (``SPEC = ...``, ``f(SPEC, ...)``) is not a citation.
OUTSIDE_CITATION = re.compile(r"SPEC\.md|README-seed|\bSPEC\b(?!\s*[=,)\]])")


def tracked_text_files():
    """The repository's tracked source, configuration and documentation files."""
    names = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.split()
    return [REPO / name for name in names
            if name.endswith((".py", ".yaml", ".yml", ".md", ".cfg", ".txt", ".sh"))]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site as ``mkdocs build --strict`` writes it."""
    site = tmp_path_factory.mktemp("docs") / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=REPO, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return site


def test_site_builds_strict_with_api_pages(site):
    assert "DoubleMHAPooling" in (site / "api" / "nn" / "index.html").read_text(encoding="utf-8")
    # Docstring sections parsed as numpy ones (the parameters as a table, the doctests
    # as examples), never left as admonitions under SpeechBrain's titles.
    for page in (site / "api").glob("*/index.html"):
        html = page.read_text(encoding="utf-8")
        assert "Parameters:" in html and "Examples:" in html, page
        assert '<details class="arguments"' not in html, page
        assert '<details class="example"' not in html, page


def test_docs_pages_cited_anywhere_exist_with_their_anchors(site):
    missing = []
    for path in tracked_text_files():
        for page, anchor in DOCS_REFERENCE.findall(path.read_text(encoding="utf-8")):
            html = site / ("" if page == "index" else page) / "index.html"
            if not html.is_file() or (anchor and f'id="{anchor}"' not in html.read_text(encoding="utf-8")):
                missing.append(f"{path.relative_to(REPO)}: docs/{page}.md#{anchor}")
    assert not missing, missing


def test_nothing_cites_files_outside_the_repository():
    citations = [f"{path.relative_to(REPO)}:{number}: {line.strip()}"
                 for path in tracked_text_files() if path.name != "test_docs.py"
                 for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if OUTSIDE_CITATION.search(line)]
    assert not citations, citations


def test_readme_links_to_pages_that_exist():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    links = [target.split("#", 1)[0] for target in LINK.findall(text)]
    links = [link for link in links if link and "://" not in link]
    assert any(link.startswith("docs/") for link in links)
    missing = [link for link in links if not (REPO / link).is_file()]
    assert not missing, f"README.md links to missing files: {missing}"


def test_readme_is_at_most_200_lines():
    with open(REPO / "README.md", "rb") as readme:
        lines = readme.read().count(b"\n")  # what `wc -l README.md` counts
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines"


def test_no_page_holds_a_pasted_editing_instruction():
    # Issue 26 item 18: the README once held 'and in "**Features.**", replace "bad lines are
    # reported ..." with "..."', an instruction to an editor pasted as text.
    instruction = re.compile(r'\breplace\s+"[^"]*"\s+with\b|^", which', re.MULTILINE)
    pages = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    pasted = [page.name for page in pages if instruction.search(page.read_text(encoding="utf-8"))]
    assert not pasted
