"""The Bento world is built once per session: the service, fuzz and soak tests all serve it."""

from __future__ import annotations

import pytest

from tests.e2e.bento_world import BentoWorld, build_bento_world


@pytest.fixture(scope="session")
def bento_world(tmp_path_factory: pytest.TempPathFactory) -> BentoWorld:
    return build_bento_world(tmp_path_factory.mktemp("bento") / "home")
