"""MkDocs hook: the site's home page is the repository's README.md, its links into docs/ made relative to the site.

The README links pages as `docs/<page>.md` and pictures as `docs/img/...`, which GitHub resolves from the repository
root; on the site the same files sit at the root, so `docs/` is dropped from every relative link. Any other relative
link in the README (a file outside docs/) is left as it is, and `mkdocs build --strict` fails on it.
"""

import re
from pathlib import Path

_DOCS_LINK = re.compile(r"(\]\()docs/")


def readme_as_home(text: str) -> str:
    """README text with its `](docs/...` links rewritten for a page at the docs root."""
    return _DOCS_LINK.sub(r"\1", text)


def on_files(files, config):
    from mkdocs.structure.files import File  # here, so the link test loads this file without the docs group

    readme = Path(config["config_file_path"]).parent / "README.md"
    files.append(File.generated(config, "index.md", content=readme_as_home(readme.read_text(encoding="utf-8"))))
    return files
