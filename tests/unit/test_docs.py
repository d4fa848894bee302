"""The docs as a reader meets them: every relative link resolves inside the repository, the README
stays short, and dated logs stay in docs/reproducibility.md and the results files."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", ROOT / "results" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
# A commit hash (hex with a letter and a digit, not the digits of a float literal) or a date.
HASH_OR_DATE = re.compile(r"(?<!\.)\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}\b"
                          r"|\b20\d\d-[01]\d-[0-3]\d\b")


def _anchor(heading: str) -> str:
    """GitHub's id of a Markdown heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    return {_anchor(line.lstrip("#")) for line in page.read_text().splitlines() if line.startswith("#")}


def _links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)  # code is not links
    return [target for target in LINK.findall(text) if not re.match(r"[a-z]+:", target)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves_inside_the_repository(page):
    for target in _links(page):
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        assert resolved.is_relative_to(ROOT), f"{page.name}: {target} leaves the repository"
        assert resolved.exists(), f"{page.name}: {target} does not exist"
        if anchor:
            assert anchor in _anchors(resolved), f"{page.name}: {target}: no such section"


def test_the_link_check_sees_a_broken_link_and_a_missing_section(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Top\n[a](missing.md) [b](#top) [c](#nowhere) [d](https://x.org/y)\n```\n[e](code.md)\n```\n")
    assert _links(page) == ["missing.md", "#top", "#nowhere"]
    assert _anchors(page) == {"top"} and _anchor("The compiled extension's build") == "the-compiled-extensions-build"


def test_the_readme_is_short():
    assert len((ROOT / "README.md").read_bytes()) <= 12_000


def test_no_commit_hash_or_date_outside_the_logs():
    places = [ROOT / "natbench", ROOT / "csrc", ROOT / "suites", ROOT / "tests", ROOT / "docs",
              ROOT / ".ci", ROOT / ".github", ROOT / "Makefile", ROOT / "README.md", ROOT / "results" / "README.md"]
    skip = {ROOT / "docs" / "reproducibility.md", ROOT / "tests" / "data"}
    found = []
    for place in places:
        for path in ([place] if place.is_file() else sorted(place.rglob("*"))):
            if not path.is_file() or path.suffix == ".pyc" or any(path.is_relative_to(s) for s in skip):
                continue
            for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                if HASH_OR_DATE.search(line):
                    found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert found == []


def test_the_hash_pattern_sees_hashes_and_dates_but_not_float_literals():
    commit, date = "55b0" + "c34", "2026-12" + "-03"  # spelled in parts, so this file stays clean
    assert HASH_OR_DATE.search(f"at {commit} and") and HASH_OR_DATE.search(f"on {date},")
    assert not HASH_OR_DATE.search("x * splat<V>(1.44269504088896341f) + 12582912.0f")
    assert not HASH_OR_DATE.search("a decade of effaced facades")
