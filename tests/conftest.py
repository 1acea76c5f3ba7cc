"""Tests that need a tool from outside Python carry its marker (registered in pyproject.toml); here,
once, a marked test whose tool is missing is skipped with the reason, or failed when `CI` is set: a CI
must never pass by skipping what it was meant to run."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from typing import NamedTuple

import pytest

from tests.support.loghub import LOGHUB_DIR, available_systems

LOGHUB_SYSTEMS = 4  # the tests that read Loghub samples use at most the first four systems


class Requirement(NamedTuple):
    present: Callable[[], bool]
    missing: str  # what is missing and how to get it


def _command(*names: str) -> Callable[[], bool]:
    return lambda: any(shutil.which(name) for name in names)


REQUIREMENTS = {
    "chromium": Requirement(
        _command("chromium", "chromium-browser"),
        "chromium is not installed (scripts/setup.sh test installs the Debian package)",
    ),
    "openssl": Requirement(_command("openssl"), "the openssl command is not installed"),
    "promtool": Requirement(
        _command("promtool"), "promtool is not installed (scripts/setup.sh test: Debian package prometheus)"
    ),
    "loghub": Requirement(
        lambda: len(available_systems()) >= LOGHUB_SYSTEMS,
        f"fewer than {LOGHUB_SYSTEMS} Loghub samples in {LOGHUB_DIR} (the shared folder beside the repo)",
    ),
    "image": Requirement(_command("buildah"), "buildah is not installed (scripts/build-image.sh needs it)"),
}


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false")


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in item.iter_markers():
        requirement = REQUIREMENTS.get(marker.name)
        if requirement is None or requirement.present():
            continue
        if in_ci():
            pytest.fail(f"CI is set, so this test must run: {requirement.missing}", pytrace=False)
        pytest.skip(requirement.missing)
