"""The documentation: the site builds without a warning, and the README stays a five-minute read.

``mkdocs build --strict`` fails on any warning: a link to a missing page or
anchor, a page left out of the navigation, a module of an API page that does not
exist, a docstring griffe cannot parse.
"""

import re
import subprocess
import sys

from tests.docs_pages import REPO

README_MAX_LINES = 200
# Markdown links and images: [text](target), the target up to a space or ")".
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def readme_local_links():
    """The targets of the README's links inside the repository, anchors dropped."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    targets = [target.split("#", 1)[0] for target in LINK.findall(text)]
    return [target for target in targets if target and "://" not in target]


def test_site_builds_strict_with_api_pages(tmp_path):
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=REPO, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "DoubleMHAPooling" in (site / "api" / "nn" / "index.html").read_text(encoding="utf-8")
    # Docstring sections parsed as numpy ones (the parameters as a table, the doctests
    # as examples), never left as admonitions under SpeechBrain's titles.
    for page in (site / "api").glob("*/index.html"):
        html = page.read_text(encoding="utf-8")
        assert "Parameters:" in html and "Examples:" in html, page
        assert '<details class="arguments"' not in html, page
        assert '<details class="example"' not in html, page


def test_readme_links_to_pages_that_exist():
    links = readme_local_links()
    assert any(link.startswith("docs/") for link in links)
    missing = [link for link in links if not (REPO / link).is_file()]
    assert not missing, f"README.md links to missing files: {missing}"


def test_readme_is_at_most_200_lines():
    with open(REPO / "README.md", "rb") as readme:
        lines = readme.read().count(b"\n")  # what `wc -l README.md` counts
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines"
