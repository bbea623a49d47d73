"""The docs: generated text is current, every relative link and anchor resolves, README.md stays short, and no
section is written twice. Markdown is read with regular expressions, fenced code blocks skipped."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from urllib.parse import unquote

REPO = Path(__file__).resolve().parent.parent
DOCS = sorted((REPO / "docs").glob("*.md"))
LINKED_PAGES = [REPO / "README.md", REPO / "ARCHITECTURE.md", *DOCS]  # whose links must resolve
SECTIONED_PAGES = [REPO / "README.md", *DOCS]  # where each section is written once
README_MAX_LINES = 250

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
CODE_SPAN = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_LINK = re.compile(r"<(?:a|img)\b[^>]*?\b(?:href|src)=\"([^\"]+)\"")
URL_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:|^//")


def prose(path: Path) -> list[str]:
    """The page's lines, those of fenced code blocks blanked out (line numbers stay)."""
    lines, fence = [], None
    for line in path.read_text(encoding="utf-8").splitlines():
        opening = FENCE.match(line)
        if fence is None and opening:
            fence = opening.group(1)
            lines.append("")
        elif fence is not None:
            if line.strip().startswith(fence):
                fence = None
            lines.append("")
        else:
            lines.append(line)
    return lines


def headings(path: Path) -> list[tuple[int, str, int]]:
    """(level, text, line number) of each heading of the page."""
    found = []
    for number, line in enumerate(prose(path), 1):
        match = HEADING.match(line)
        if match:
            found.append((len(match.group(1)), match.group(2), number))
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text as rendered, lowercase, without punctuation but hyphens and
    underscores, spaces made hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "")
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor of the page: a heading's slug, with -1, -2... for the second, third... heading of that slug."""
    seen: Counter[str] = Counter()
    found = set()
    for _, text, _ in headings(path):
        base = slug(text)
        found.add(f"{base}-{seen[base]}" if seen[base] else base)
        seen[base] += 1
    return found


def links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of each Markdown link, image and HTML href/src of the page, outside code."""
    found = []
    for number, line in enumerate(prose(path), 1):
        line = CODE_SPAN.sub("", line)
        found += [(number, target) for target in LINK.findall(line) + HTML_LINK.findall(line)]
    return found


def broken_link(page: Path, target: str) -> str | None:
    """Why a link of ``page`` leads nowhere, or None when it reaches its file (and heading)."""
    if URL_SCHEME.match(target):
        return None
    file_part, _, anchor = target.partition("#")
    file = (page.parent / unquote(file_part)).resolve() if file_part else page
    if not file.exists():
        return "no such file"
    if anchor and file.suffix == ".md" and anchor not in anchors(file):
        return "no such heading"
    return None


def test_the_generated_docs_are_current():
    """tools/write_docs.py --check: the settings table, the CLI reference, configs/default.toml and the tables
    made from the test cases are what `make docs` writes now."""
    result = subprocess.run([sys.executable, str(REPO / "tools" / "write_docs.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_relative_link_reaches_its_file_and_heading():
    broken = [f"{page.relative_to(REPO)}:{number}: {target}: {why}"
              for page in LINKED_PAGES for number, target in links(page)
              if (why := broken_link(page, target))]
    assert not broken, "\n".join(broken)


def test_the_index_of_docs_lists_every_page():
    index = REPO / "docs" / "README.md"
    listed = {(index.parent / target.partition("#")[0]).resolve() for _, target in links(index)}
    unlisted = [page.name for page in DOCS if page != index and page not in listed]
    assert not unlisted, f"docs/README.md links no {unlisted}"


def test_the_readme_fits_on_a_few_screens():
    lines = (REPO / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines: move sections to docs/"


def test_no_section_is_written_twice():
    """One place per concept: no heading text (as its anchor reads) appears twice in README.md and docs/."""
    places: dict[str, list[str]] = {}
    for page in SECTIONED_PAGES:
        for _, text, number in headings(page):
            places.setdefault(slug(text), []).append(f"{page.relative_to(REPO)}:{number} {text}")
    twice = [" and ".join(where) for where in places.values() if len(where) > 1]
    assert not twice, "\n".join(twice)


def test_the_checks_read_markdown_as_github_does(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# What the public gets: answer log, `lookalike stats`, metrics\n"
                    "## What happens when…\n## What happens when…\n"
                    "```sh\n# not a heading [nor a link](nowhere.md)\n```\n"
                    "See `[code](nowhere.md)`, [this](#what-happens-when-1) and <img src=\"gone.png\">.\n",
                    encoding="utf-8")
    assert anchors(page) == {"what-the-public-gets-answer-log-lookalike-stats-metrics", "what-happens-when",
                             "what-happens-when-1"}
    assert [text for _, text, _ in headings(page)][-1] == "What happens when…"
    assert links(page) == [(7, "#what-happens-when-1"), (7, "gone.png")]
    assert broken_link(page, "gone.png") == "no such file"
    assert broken_link(page, "#what-happens-when-2") == "no such heading"
    assert broken_link(page, "https://example.org/#x") is None
