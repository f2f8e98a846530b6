"""The documentation's relative links resolve: every file it points to exists, and every #anchor names a heading of
that file (GitHub's anchors: lower case, punctuation dropped, spaces as hyphens)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "runs" / "README.md", *sorted((ROOT / "docs").glob("*.md")),
         *sorted((ROOT / "benchmarks" / "results").rglob("*.md"))]
#: a results path named in prose (``benchmarks/results/...`` or ``results/...``), without placeholders
RESULT_PATH = re.compile(r"(?:benchmarks/)?results/([\w\-./]+\.(?:md|json|png|txt))")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _anchors(page: Path) -> set[str]:
    heads = [line.lstrip("#").strip() for line in page.read_text().splitlines() if line.startswith("#")]
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in heads}


def _links(page: Path):
    in_code = False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if not in_code:
            yield from LINK.findall(line)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    bad = []
    for target in _links(page):
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            bad.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            bad.append(f"{target} (no heading #{anchor})")
    assert not bad, f"{page.relative_to(ROOT)} links to: " + ", ".join(bad)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_results_file_named_exists(page):
    """A file of benchmarks/results named in prose (one per study folder) exists where the page says."""
    named = {m for m in RESULT_PATH.findall(page.read_text()) if "_N." not in m and "*" not in m}
    def there(m):  # a gallery command's path stands for the files it writes (NAME_canvas.png, NAME_cell.png)
        path = ROOT / "benchmarks" / "results" / m
        return path.exists() or ("gallery" in path.stem and any(path.parent.glob(f"{path.stem}_*{path.suffix}")))
    missing = sorted(m for m in named if not there(m))
    assert not missing, f"{page.relative_to(ROOT)} names results that are not there: {missing}"


def test_the_readme_is_an_entrance():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 150


def test_results_are_one_folder_per_study_each_in_the_index():
    results = ROOT / "benchmarks" / "results"
    loose = sorted(p.name for p in results.iterdir() if p.is_file() and p.name != "README.md")
    assert not loose, f"benchmarks/results keeps a study in a folder of its own, not loose files: {loose}"
    index = (results / "README.md").read_text()
    unnamed = sorted(p.name for p in results.iterdir() if p.is_dir() and f"`{p.name}/`" not in index)
    assert not unnamed, f"benchmarks/results/README.md does not name the studies {unnamed}"
    missing = sorted(name for name in re.findall(r"\| `([\w\-]+)/` \|", index) if not (results / name).is_dir())
    assert not missing, f"benchmarks/results/README.md names studies that are not there: {missing}"


def test_every_recipe_of_extending_md_is_performed_by_a_test_that_exists():
    text = (ROOT / "docs" / "extending.md").read_text()
    named = re.findall(r"Performed (?:\([^)]*\) )?by `(tests/[\w/]+\.py)::(\w+)`", text)
    recipes = re.findall(r"^## ", text, re.M)
    assert len(named) == len(recipes) - 1, "every recipe but the command's names the test that performs it"
    for path, test in named:
        assert f"def {test}(" in (ROOT / path).read_text(), f"{path}::{test} does not exist"
