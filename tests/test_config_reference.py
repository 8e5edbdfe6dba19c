"""docs/config.md is generated from the declarations; this fails when it is stale (regenerate it with
`uv run python -m tspo_ray.config_reference > docs/config.md`)."""
from pathlib import Path

from tspo_ray.config import Config
from tspo_ray.config_reference import page

DOC = Path(__file__).resolve().parents[1] / "docs" / "config.md"


def test_the_config_reference_page_is_current():
    assert DOC.read_text() == page(), "docs/config.md is stale: uv run python -m tspo_ray.config_reference > " \
                                      "docs/config.md"


def test_every_config_field_is_documented_on_the_page():
    text = DOC.read_text()
    for name, section in Config.model_fields.items():
        for field, info in section.annotation.model_fields.items():
            if hasattr(info.annotation, "model_fields"):  # a subsection: its fields are listed
                assert f"`{name}.{field}." in text
                continue
            assert f"`{name}.{field}`" in text
            assert info.description, f"{name}.{field} has no docstring"
