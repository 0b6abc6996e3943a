"""The market_pipeline code location: `defs` is what workspace.yaml (and `dg`) load.

Every definition lives under `market_pipeline/defs/` and is found by Dagster's `load_from_defs_folder`
(configured by `[tool.dg]` in pyproject.toml). Installed without its source tree (`pip install .` in an
image), the same folder is loaded from the installed package.
"""

from pathlib import Path

import dagster as dg

from market_pipeline import settings
from market_pipeline.devtools import dagster_patches  # noqa: F401  (the polygon_api pool's one-holder claim)

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _load() -> dg.Definitions:
    if (PROJECT_ROOT / "pyproject.toml").is_file():
        return dg.load_from_defs_folder(project_root=PROJECT_ROOT)
    from dagster.components.core.component_tree import ComponentTree

    import market_pipeline.defs

    return ComponentTree.from_module(defs_module=market_pipeline.defs, project_root=PROJECT_ROOT).build_defs()


settings.validate()  # a bad setting stops the code location loading, with a one-line reason
defs = _load()
