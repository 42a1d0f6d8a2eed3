"""The README and CONTRIBUTING.md link only to files that exist, and to headings that exist in them
(the docs site checks its own pages: `make docs` builds it with `mkdocs build --strict`)."""

import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")  # [text](target) and ![alt](target)


def slug(heading: str) -> str:
    """The anchor MkDocs (Python-Markdown's toc) gives a heading."""
    text = re.sub(r"<[^>]+>|[`*_]", "", heading)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", text).strip().lower())


def anchors(page: Path) -> set:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {slug(m) for m in re.findall(r"^#{1,6}\s+(.+?)\s*$", text, flags=re.M)}


def local_links(document: Path) -> list:
    text = re.sub(r"```.*?```", "", document.read_text(), flags=re.S)
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]


@pytest.mark.parametrize("name", ["README.md", "CONTRIBUTING.md"])
def test_relative_links_and_images_resolve(name):
    document = ROOT / name
    for link in local_links(document):
        path, _, anchor = link.partition("#")
        target = (document.parent / path).resolve() if path else document
        assert target.exists(), f"{name}: {link} points to a missing file"
        if anchor and target.suffix == ".md":
            assert anchor in anchors(target), f"{name}: {link}: no heading with that anchor in {path or name}"


def test_readme_links_to_every_docs_section():
    links = {link.partition("#")[0] for link in local_links(ROOT / "README.md")}
    for page in [
        "getting-started",
        "training",
        "data",
        "sampling",
        "conditioning",
        "evaluation",
        "studio",
        "hub",
        "findings/index",
        "design",
    ]:
        assert f"docs/{page}.md" in links, f"the README does not link to docs/{page}.md"


def test_slug_matches_the_docs_anchors():
    assert slug("What fits: memory and speed per preset") == "what-fits-memory-and-speed-per-preset"
    assert slug("Scaling out: torchrun, accumulation, FSDP") == "scaling-out-torchrun-accumulation-fsdp"
    assert slug("`vidiff prepare` and λ") == "vidiff-prepare-and"


def test_readme_stays_short_and_opens_with_the_two_commands():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 150
    assert lines[3].startswith("make demo   #") and lines[4].startswith("make test   #")
