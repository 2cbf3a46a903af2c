"""The README front page and the MkDocs site's wiring.

`mkdocs build --strict` (run by `make test` before pytest) checks the links, anchors and pages
inside docs/. What it cannot see is checked here: the README (not part of the site), the README
sections the site's home page includes, the nav against the pages on disk, the API pages against
the public modules, and the docs extra the Makefile installs.
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"

API_MODULES = ("connections", "model", "train", "data", "hf", "diagnostics", "analysis", "bench", "kernels")
README_MAX_CHARS = 10_500

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
SECTION = re.compile(r"--8<-- \[(start|end):([\w-]+)\]")
INCLUDE = re.compile(r'^--8<-- "README\.md:([\w-]+)"$', re.MULTILINE)


def _nav_pages(node) -> list[str]:
    """Every page path in a mkdocs nav (nested lists of strings and one-key dicts)."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [p for item in node for p in _nav_pages(item)]
    if isinstance(node, dict):
        return [p for value in node.values() for p in _nav_pages(value)]
    raise TypeError(f"unexpected nav entry {node!r}")


def _mkdocs_config() -> dict:
    yaml = pytest.importorskip("yaml")
    return yaml.safe_load((ROOT / "mkdocs.yml").read_text())


def test_readme_is_a_front_page():
    text = README.read_text()
    assert len(text) <= README_MAX_CHARS, f"README.md is {len(text)} characters, allowed {README_MAX_CHARS}"
    quick = text[text.index("## Quick start") : text.index("## Install")]
    commands = re.findall(r"^(make \w+)", quick, re.MULTILINE)
    assert commands == ["make demo", "make test"]
    assert text.count("formerly") == 1


def test_readme_links_resolve():
    """The README is not built by mkdocs, so its relative links are checked here."""
    targets = [t for t in LINK.findall(README.read_text()) if not re.match(r"[a-z]+://", t)]
    assert targets, "the README links to its guides"
    missing = [t for t in targets if not (ROOT / t.split("#")[0]).exists()]
    assert not missing, f"README.md links to missing files: {missing}"


def test_readme_links_every_guide():
    text = README.read_text()
    guides = sorted(p.name for p in DOCS.glob("*.md") if p.name != "index.md")
    unlinked = [g for g in guides if f"(docs/{g})" not in text]
    assert not unlinked, f"README.md does not link the guides {unlinked}"


def test_home_page_includes_existing_readme_sections():
    readme = README.read_text()
    markers = SECTION.findall(readme)
    starts = [name for kind, name in markers if kind == "start"]
    ends = [name for kind, name in markers if kind == "end"]
    assert starts == ends and len(set(starts)) == len(starts), f"unbalanced snippet sections {markers}"
    for name in starts:  # each section opens before it closes, on a hidden (comment) line
        assert readme.index(f"[start:{name}]") < readme.index(f"[end:{name}]")
    for line in readme.splitlines():
        if SECTION.search(line):
            assert line.startswith("<!--") and line.endswith("-->"), line
    included = INCLUDE.findall((DOCS / "index.md").read_text())
    assert included, "docs/index.md includes README sections"
    assert set(included) <= set(starts), f"docs/index.md includes unknown sections {set(included) - set(starts)}"


def test_nav_lists_every_page_and_only_existing_ones():
    cfg = _mkdocs_config()
    nav = _nav_pages(cfg["nav"])
    assert len(nav) == len(set(nav)), "a page appears twice in the nav"
    on_disk = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    assert set(nav) == on_disk, f"not in nav: {on_disk - set(nav)}; missing files: {set(nav) - on_disk}"
    assert cfg.get("strict") is True


def test_api_pages_cover_the_public_modules():
    cfg = _mkdocs_config()
    nav = set(_nav_pages(cfg["nav"]))
    top = (DOCS / "api" / "hyperconn.md").read_text()
    assert re.search(r"^::: hyperconn$", top, re.MULTILINE)
    # the public API comes first: its page opens the API section, the internals page closes it
    api_section = next(
        entry["API reference"] for entry in cfg["nav"] if isinstance(entry, dict) and "API reference" in entry
    )
    api_pages = _nav_pages(api_section)
    assert api_pages[:2] == ["api/index.md", "api/hyperconn.md"] and api_pages[-1] == "api/internals.md"
    public = re.findall(r"^::: ([\w.]+)$", top, re.MULTILINE)
    for kind in ("Residual", "HC", "MHC", "MHCLite", "KromHC", "SHC", "Identity", "Orthogonal"):
        assert f"hyperconn.connections.{kind}" in public, kind
    assert {"hyperconn.hf.convert.convert", "hyperconn.hf.load.load"} <= set(public)
    assert "HyperConnection" not in "".join(public) and "fileio" not in "".join(public)
    for name in API_MODULES:
        page = DOCS / "api" / f"{name}.md"
        assert f"api/{name}.md" in nav
        identifiers = re.findall(r"^::: (hyperconn\.[\w.]+)$", page.read_text(), re.MULTILINE)
        assert identifiers and all(i.split(".")[1] == name for i in identifiers), (page, identifiers)
        for ident in identifiers:  # every rendered module exists in the source tree
            rel = Path("src", *ident.split("."))
            assert (ROOT / rel.with_suffix(".py")).exists() or (ROOT / rel / "__init__.py").exists(), ident


def test_docs_extra_is_installed_by_the_makefile():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {re.match(r"[\w-]+", req).group(0) for req in extras["docs"]}
    assert {"mkdocs", "mkdocs-material", "mkdocstrings"} <= names
    makefile = (ROOT / "Makefile").read_text()
    assert "'.[all,dev,docs]'" in makefile
    test_rule = re.search(r"^test:(.*)$", makefile, re.MULTILINE).group(1).split()
    assert test_rule == ["lint", "docs-check"], test_rule
    assert re.search(r"^MKDOCS\s*:=.*/bin/mkdocs$", makefile, re.MULTILINE)
    assert re.search(r"^docs-check:.*\n(?:\t.*\n)*?\t\$\(MKDOCS\) build --strict", makefile, re.MULTILINE)


def test_every_page_builds_to_its_own_url(monkeypatch):
    """Two pages with one destination (results.md and results/README.md both become
    results/index.html) silently drop one of them from the site; `--strict` does not notice."""
    pytest.importorskip("mkdocs")
    monkeypatch.setenv("NO_MKDOCS_2_WARNING", "1")
    from mkdocs.config import load_config
    from mkdocs.structure.files import get_files

    cfg = load_config(str(ROOT / "mkdocs.yml"))
    pages = get_files(cfg).documentation_pages()
    assert pages, "mkdocs found no pages"
    by_dest: dict[str, list[str]] = {}
    for page in pages:
        by_dest.setdefault(page.dest_uri, []).append(page.src_uri)
    clashes = {dest: srcs for dest, srcs in by_dest.items() if len(srcs) > 1}
    assert not clashes, f"pages that build to one URL: {clashes}"


RAW_ROLE = re.compile(r":(?:mod|meth|func|class|attr|data|obj|exc):(?:`|<code>)")


@pytest.mark.slow
def test_api_pages_render_no_raw_sphinx_roles(tmp_path):
    """The docstrings' Sphinx roles (`:func:`collect``) are rewritten into cross-references by
    docs/griffe_sphinx_roles.py; without it they render as literal text."""
    pytest.importorskip("mkdocstrings")
    import os
    import subprocess
    import sys

    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    pages = sorted((site / "api").rglob("*.html"))
    assert len(pages) >= len(API_MODULES) + 2
    raw = {str(p.relative_to(site)): RAW_ROLE.findall(p.read_text()) for p in pages}
    raw = {page: found for page, found in raw.items() if found}
    assert not raw, f"raw Sphinx roles in the built API pages: {raw}"
    linked = (site / "api" / "hyperconn" / "index.html").read_text()
    assert 'class="autorefs autorefs-internal"' in linked  # roles became links, not only code
    assert not list(site.rglob("griffe_*.py")), "the extension is not published with the site"


PERFORMANCE_MAX_CHARS = 15_000
MILESTONE = re.compile(r"Speed I+\b|op diet|\bissue \d+|Evidence I+\b|\bstudy [a-f]\b|\bsession \d\b", re.IGNORECASE)
# pages that may name milestones: the dated log; results.md is being rewritten in its own change
MILESTONES_ALLOWED = {"performance-log.md", "results.md"}


def test_performance_page_is_short_and_links_its_log():
    text = (DOCS / "performance.md").read_text()
    assert len(text) <= PERFORMANCE_MAX_CHARS, f"performance.md is {len(text)} characters"
    assert "(performance-log.md)" in text
    assert "performance-log.md" in _nav_pages(_mkdocs_config()["nav"])


def test_guides_name_no_internal_milestones():
    """User-facing pages describe what is true now in plain words; the dated log keeps the history."""
    found = {
        page.name: MILESTONE.findall(page.read_text())
        for page in sorted(DOCS.glob("*.md"))
        if page.name not in MILESTONES_ALLOWED
    }
    found = {name: hits for name, hits in found.items() if hits}
    assert not found, f"internal milestone names in guide pages: {found}"
