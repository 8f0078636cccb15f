"""Session fixtures: the chart rendered once per values case, the Serve config built once."""

from __future__ import annotations

import pytest
from chart_cases import CASES, case_values

from irec.k8s.render import ROOT, render


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict]]:
    return {case: render(case_values(case)) for case in CASES}


@pytest.fixture(scope="session")
def builder_output() -> dict:
    """What `irec serve-config --config configs/k8s.yaml` prints, parsed."""
    from irec.config import PlatformConfig
    from ray_apps.app import serve_config

    return serve_config({"irec": PlatformConfig.load(ROOT / "configs" / "k8s.yaml").app_args()})
