"""docs/definitions.md is the repository's own statement of every definition: each citation of it resolves,
and nothing points outside the repository for one."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "definitions.md"
SOURCES = [ROOT / "README.md", *sorted((ROOT / "headlab").rglob("*.py")), *sorted((ROOT / "tests").glob("*.py")),
           *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "bench").glob("*.py"))]


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^a-z0-9 -]", "", heading.strip().lower()).replace(" ", "-")


def test_every_citation_names_a_section_of_the_page():
    anchors = {_anchor(line.lstrip("#")) for line in PAGE.read_text().splitlines() if line.startswith("#")}
    cited = {}
    for path in SOURCES:
        for anchor in re.findall(r"definitions\.md#([a-z0-9-]+)", path.read_text()):
            cited.setdefault(anchor, path.relative_to(ROOT))
    assert cited, "nothing cites docs/definitions.md"
    assert {a: str(p) for a, p in cited.items() if a not in anchors} == {}
    assert {"retrieval-score", "knockout", "activation-patching", "lofit"} <= set(cited)


def test_no_file_points_to_the_old_notes_outside_the_repository():
    old = "DESIGN" + ".md"  # spelled apart so this file does not match itself
    assert [str(p.relative_to(ROOT)) for p in SOURCES if old in p.read_text()] == []
