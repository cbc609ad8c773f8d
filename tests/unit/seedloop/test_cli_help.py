"""Every subcommand explains itself: a description paragraph, and a help text for every flag."""

from __future__ import annotations

import argparse

import pytest

from seedloop.cli import build_parser, main, settings_from
from stream_processors.attribution.models import MODEL_NAMES


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_subcommand_has_a_description_and_every_flag_a_help() -> None:
    subs = _subparsers()
    assert set(subs) >= {
        "demo",
        "stack",
        "simulate",
        "worker",
        "optimize",
        "report",
        "attribute",
        "evaluate",
        "bench",
        "soak",
    }
    for name, sub in subs.items():
        assert sub.description and len(sub.description.split()) >= 8, name
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help and action.help != argparse.SUPPRESS, (name, action.option_strings)


def test_stack_offers_only_the_flags_it_uses() -> None:
    flags = {opt for a in _subparsers()["stack"]._actions for opt in a.option_strings}
    assert flags == {
        "-h",
        "--help",
        "--kafka",
        "--kafka-nodes",
        "--kafka-data",
        "--log-format",
        "--log-level",
    }


def test_optimize_port_sets_the_optimizer_port() -> None:
    args = build_parser().parse_args(["optimize", "--port", "7123"])
    assert settings_from(args).optimizer_port == 7123


def test_attribute_model_choices_are_the_registry() -> None:
    model = next(a for a in _subparsers()["attribute"]._actions if "--model" in a.option_strings)
    assert tuple(model.choices or ()) == MODEL_NAMES
    with pytest.raises(SystemExit):
        build_parser().parse_args(["attribute", "--paths", "-", "--model", "nope"])


def test_seeds_dir_default_is_a_real_scenario() -> None:
    # The help promises "the seeds shipped with seedloop" when the flag is absent.
    settings = settings_from(build_parser().parse_args(["evaluate"]))
    assert (settings.seeds_dir / "campaigns.json").is_file()


@pytest.mark.parametrize("command", [["evaluate", "--days", "1"], ["report"]])
def test_an_invalid_setting_is_one_line_and_exit_2_for_offline_and_service_commands(
    command: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SEEDLOOP_PARTITIONS", "abc")
    assert main(command) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("seedloop: invalid settings: SEEDLOOP_PARTITIONS"), err
