"""The README is a guide and its links and the docs pages' links hold, without building the site (no mkdocs needed).

`mkdocs build --strict` (`.ci/run`) checks the same links and more on the built site; this test catches a moved page
or picture in the fast tier.
"""

import importlib.util
import re
import unicodedata
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
MAX_README_LINES = 300

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.S | re.M)
_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def _pages() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if "hooks" not in p.relative_to(DOCS).parts)


def _prose(text: str) -> str:
    """The text without fenced blocks and code spans, where brackets are code, not links."""
    return _CODE.sub("", _FENCE.sub("", text))


def _links(text: str) -> list[str]:
    return _LINK.findall(_prose(text))


def _relative(target: str) -> bool:
    return not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) and not target.startswith("//")


def _slug(heading: str) -> str:
    """A heading's anchor as MkDocs' toc writes it (GitHub's agrees for the headings used here)."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def _anchors(page: Path) -> set[str]:
    return {_slug(h) for h in _HEADING.findall(_FENCE.sub("", page.read_text(encoding="utf-8")))}


def _check(page: Path, base: Path) -> list[str]:
    """Broken relative links of `page`, each resolved against the folder `base`."""
    bad = []
    for target in _links(page.read_text(encoding="utf-8")):
        if not _relative(target):
            continue
        path, _, anchor = target.partition("#")
        dest = (base / path).resolve() if path else page
        if not dest.exists():
            bad.append(f"{page.relative_to(ROOT)}: {target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            bad.append(f"{page.relative_to(ROOT)}: {target}: no heading with that anchor")
    return bad


def test_readme_is_a_guide():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; at most {MAX_README_LINES}"
    assert "`uv run pytest`" in README.read_text(encoding="utf-8")


def test_readme_links_resolve():
    assert _check(README, ROOT) == []


@pytest.mark.parametrize("page", _pages(), ids=lambda p: str(p.relative_to(DOCS)))
def test_docs_links_resolve(page):
    assert _check(page, page.parent) == []


def test_readme_links_resolve_on_the_site():
    """The site's home page is the README with `docs/` dropped from its links (docs/hooks/readme.py)."""
    spec = importlib.util.spec_from_file_location("readme_hook", DOCS / "hooks" / "readme.py")
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    home = hook.readme_as_home(README.read_text(encoding="utf-8"))
    bad = []
    for target in _links(home):
        path = target.partition("#")[0]
        if _relative(target) and path and not (DOCS / path).resolve().is_relative_to(DOCS.resolve()):
            bad.append(f"{target}: outside docs/, not on the site")
    assert bad == []


def _nav_pages(nav) -> set[str]:
    if isinstance(nav, str):
        return {nav}
    if isinstance(nav, list):
        return set().union(*(_nav_pages(n) for n in nav))
    if isinstance(nav, dict):
        return set().union(*(_nav_pages(v) for v in nav.values()))
    return set()


def test_every_page_is_in_the_nav():
    config = yaml.load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"), Loader=yaml.BaseLoader)
    nav = _nav_pages(config["nav"])
    pages = {str(p.relative_to(DOCS)) for p in _pages()} | {"index.md"}
    assert pages - nav == set(), "pages missing from mkdocs.yml's nav"
    assert nav - pages == set(), "nav entries without a page"
