"""Which service tiers a test session runs against (tests/services.py), without starting any."""

from __future__ import annotations

import pytest

from tests.services import select_tiers


def docker_is(answer: bool) -> object:
    calls: list[bool] = []

    def docker() -> bool:
        calls.append(answer)
        return answer

    docker.calls = calls  # type: ignore[attr-defined]
    return docker


@pytest.mark.parametrize(
    ("value", "docker", "expected"),
    [
        (None, False, ["embedded", "local"]),
        ("", False, ["embedded", "local"]),
        ("auto", True, ["embedded", "testcontainers"]),
        (None, True, ["embedded", "testcontainers"]),
        ("embedded", True, ["embedded"]),
        ("local", False, ["local"]),
        ("local, embedded", False, ["local", "embedded"]),
        # Asked for explicitly, testcontainers is chosen even without Docker: its tests then fail
        # with the reason instead of quietly running elsewhere.
        ("testcontainers", False, ["testcontainers"]),
        ("embedded,auto,embedded", False, ["embedded", "local"]),
    ],
)
def test_tiers_follow_the_setting_and_docker(value: str | None, docker: bool, expected: list[str]) -> None:
    assert select_tiers(value, docker_is(docker)) == expected  # type: ignore[arg-type]


def test_docker_is_asked_only_for_auto() -> None:
    probe = docker_is(True)
    select_tiers("embedded,local", probe)  # type: ignore[arg-type]
    assert probe.calls == []  # type: ignore[attr-defined]


@pytest.mark.parametrize("value", ["kafka", "embedded,docker", "Local"])
def test_an_unknown_tier_names_the_setting(value: str) -> None:
    with pytest.raises(ValueError, match="SEEDLOOP_TEST_SERVICES"):
        select_tiers(value, docker_is(False))  # type: ignore[arg-type]
