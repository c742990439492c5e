"""The README and the docs/ pages: the README stays short, every relative link (and its #anchor) points at
something that exists, every page is reachable from mkdocs.yml's nav (or deliberately left out of it),
and the site builds with --strict when mkdocs is installed."""

from __future__ import annotations

import fnmatch
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README_MAX_LINES = 250

FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def _prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks (links and headings inside them are examples, not links)."""
    out, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            out.append(line)
    return out


def slug(heading: str) -> str:
    """GitHub's heading id, which mkdocs.yml makes the site use too (pymdownx.slugs, case lower)."""
    text = CODE_SPAN.sub(lambda m: m.group(2), heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link in a heading: its text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading id of a Markdown file; repeated headings get -1, -2, ... as on GitHub and the site."""
    seen: dict[str, int] = {}
    out = set()
    for line in _prose_lines(path.read_text(encoding="utf-8")):
        m = HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(path: Path) -> list[str]:
    """The link targets of a Markdown file, outside code blocks and code spans."""
    out = []
    for line in _prose_lines(path.read_text(encoding="utf-8")):
        out += LINK.findall(CODE_SPAN.sub("", line))
    return out


def broken_links(path: Path, must_stay_in: Path | None = None, root: Path = ROOT) -> list[str]:
    """Relative links of ``path`` whose file or #anchor does not exist, each as 'FILE: TARGET (why)'."""
    problems = []
    for target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # https:, mailto: ...
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        where = f"{path.relative_to(root)}: {target}"
        if not dest.exists():
            problems.append(f"{where} (no such file)")
        elif must_stay_in is not None and not dest.is_relative_to(must_stay_in):
            problems.append(f"{where} (outside {must_stay_in.name}/: the site cannot link it)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{where} (no heading with that id in {dest.name})")
    return problems


class _MkdocsLoader(yaml.SafeLoader):
    """mkdocs.yml with its !!python/... tags (e.g. the toc slugify function) read as plain values."""


_MkdocsLoader.add_multi_constructor("tag:yaml.org,2002:python/", lambda loader, suffix, node: None)


def mkdocs_config() -> dict:
    return yaml.load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"), Loader=_MkdocsLoader)


def nav_pages(nav) -> list[str]:
    """Every page path named in a mkdocs nav (nested sections included; external links skipped)."""
    if isinstance(nav, str):
        return [] if "://" in nav else [nav]
    if isinstance(nav, dict):
        return [p for v in nav.values() for p in nav_pages(v)]
    if isinstance(nav, list):
        return [p for v in nav for p in nav_pages(v)]
    return []


def _left_out(page: str, patterns: str | None) -> bool:
    """True when mkdocs.yml's not_in_nav (gitignore-style lines) names the page."""
    for pat in (patterns or "").splitlines():
        pat = pat.strip()
        if pat and not pat.startswith("#"):
            if fnmatch.fnmatch("/" + page, pat if pat.startswith("/") else "*/" + pat):
                return True
    return False


def doc_pages() -> list[str]:
    return sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))


def test_readme_is_short():
    n = len((ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines (at most {README_MAX_LINES}): move detail to docs/"


def test_readme_links_exist():
    assert broken_links(ROOT / "README.md") == []
    assert any(t.startswith("docs/") for t in links(ROOT / "README.md")), "the README links the docs pages"


@pytest.mark.parametrize("page", doc_pages())
def test_docs_links_exist_and_stay_in_docs(page):
    assert broken_links(DOCS / page, must_stay_in=DOCS) == []


def test_every_page_is_in_the_nav_or_deliberately_left_out():
    cfg = mkdocs_config()
    listed = nav_pages(cfg.get("nav"))
    assert [p for p in listed if not (DOCS / p).is_file()] == [], "mkdocs.yml nav names a missing page"
    assert len(listed) == len(set(listed)), "a page is listed twice in the nav"
    orphans = [p for p in doc_pages() if p not in listed and not _left_out(p, cfg.get("not_in_nav"))]
    assert orphans == [], f"add these pages to mkdocs.yml's nav (or to not_in_nav): {orphans}"


def test_the_checker_finds_what_it_should(tmp_path):
    """The link check itself: a missing file, a missing anchor, a link out of docs/ and code are told apart."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs/b.md").write_text("# Title: `cxrprep merge` — pieces\n\n## Title: `cxrprep merge` — pieces\n")
    (tmp_path / "x.md").write_text("")
    page = tmp_path / "docs/a.md"
    page.write_text(
        "[ok](b.md#title-cxrprep-merge--pieces) [ok2](b.md#title-cxrprep-merge--pieces-1) [web](https://x.org)\n"
        "[gone](c.md) [bad anchor](b.md#nope) [out](../x.md) `[code](c.md)`\n"
        "```\n[fenced](c.md)\n```\n"
    )
    problems = broken_links(page, must_stay_in=tmp_path / "docs", root=tmp_path)
    assert [p.split(": ", 1)[1].split(" (")[0] for p in problems] == ["c.md", "b.md#nope", "../x.md"]
    assert _left_out("appendix/old.md", "appendix/*.md\n") and not _left_out("index.md", "appendix/*.md")


def test_site_builds_strict(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    r = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert r.returncode == 0, r.stdout + r.stderr
