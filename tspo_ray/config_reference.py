"""docs/config.md, generated from the declarations: the job config, each answerer back end's settings (from the
registry), the Serve settings, the embedded world's settings and an export's selector_config.json.

    uv run python -m tspo_ray.config_reference > docs/config.md

tests/test_config_reference.py fails when the page is stale.
"""
from __future__ import annotations

import sys

from tspo_ray.answerers.base import ANSWERERS
from tspo_ray.config import Config
from tspo_ray.selector import SelectorConfig
from tspo_ray.serve.service import ServeSettings
from tspo_ray.settings import reference
from tspo_ray.synthetic.world import WorldSettings

TABLE = ["| key | type | default | meaning |", "|---|---|---|---|"]


def _doc(model: type) -> str:
    return " ".join((model.__doc__ or "").split())


def page() -> str:
    lines = ["# Config reference", "",
             "Generated from the declarations (`tspo_ray/settings.py` and the modules named below) by "
             "`python -m tspo_ray.config_reference > docs/config.md`; do not edit by hand. A job config is set in a "
             "YAML file and on the command line as `section.key=value`; an unknown key or a bad value stops the job "
             "with the field's path and the reason.", "", "## Job config (`tspo_ray/config.py`)", ""]
    for name, field in Config.model_fields.items():
        section = field.annotation
        lines += [f"### `{name}`", "", _doc(section), "", *TABLE, *reference(section, name), ""]
    lines += ["## Answerer back ends (`answerer.settings`, by `answerer.kind`)", "",
              "Each back end registers its settings where it is defined (`tspo_ray.answerers.base.ANSWERERS`).", ""]
    for kind in ANSWERERS.names():
        model = ANSWERERS.get(kind).settings
        lines += [f"### `answerer.kind: {kind}` (`{model.__module__}.{model.__name__}`)", "", _doc(model), "",
                  *TABLE, *reference(model, "answerer.settings"), ""]
    for title, model, note in (
            ("Serve (`tspo_ray/serve/service.py`)", ServeSettings,
             "The args of the Serve app (configs/serve.yaml `args`; jobs/serve.py builds them from its options)."),
            ("Embedded world (`tspo_ray/synthetic/world.py`)", WorldSettings,
             "pipelines/make_synthetic.py's world, recorded in the manifest."),
            ("Export (`selector_config.json`, `tspo_ray/selector.py`)", SelectorConfig,
             "Written by `python -m tspo_ray.export` beside the TSPO-0.4B layout.")):
        lines += [f"## {title}", "", note + " " + _doc(model), "", *TABLE, *reference(model, ""), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(page())
