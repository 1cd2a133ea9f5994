"""The flag catalogue (``search.cli.FLAGS``) as every command's parser takes it: each flag once,
declared by the catalogue, its help showing the default a user gets."""

from __future__ import annotations

import argparse
import re
from collections import Counter
from collections.abc import Iterator

import pytest

from search import bench, dashboard, evaluate, experiment, export, report, run
from search.cli import FLAGS
from search.config import (
    DEFAULTS,
    HOLD_CONFIDENCE,
    MAX_ROUNDS,
    MIN_FEASIBLE_FRACTION,
    RECORDED,
    RUN_SETTINGS,
    flag_of,
)

COMMANDS = {
    "run": run,
    "evaluate": evaluate,
    "export": export,
    "report": report,
    "dashboard": dashboard,
    "bench": bench,
    "experiment": experiment,
}


def parsers() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every command's parser, and each of its subcommands' (``experiment mnist``)."""
    for name, module in COMMANDS.items():
        parser = module.build_parser()
        yield name, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, subparser in action.choices.items():
                    yield f"{name} {sub}", subparser


PARSERS = dict(parsers())


# A flag of a catalogue name that means something else in one command, by its prog: the
# quality bench's --trials is a list of study budgets to measure, not one study's budget.
OWN_MEANING = {"python -m search.bench quality": {"--trials"}}


def catalogue_actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The parser's actions for catalogue flags, by catalogue name."""
    own = OWN_MEANING.get(parser.prog, set())
    return {
        option: action
        for action in parser._actions
        for option in action.option_strings
        if option in FLAGS and option not in own
    }


def expanded_help(action: argparse.Action) -> str:
    """The help as ``--help`` prints it, unwrapped (``%%`` and ``%(default)s`` expanded)."""
    return argparse.HelpFormatter("prog")._expand_help(action)


def test_every_command_parser_is_here() -> None:
    assert set(PARSERS) >= {*COMMANDS, "experiment mnist", "experiment pipeline"}


@pytest.mark.parametrize("command", sorted(PARSERS))
def test_each_catalogue_flag_is_added_once_by_the_catalogue(command: str) -> None:
    parser = PARSERS[command]
    counts = Counter(option for action in parser._actions for option in action.option_strings)
    for name in FLAGS:
        assert counts[name] in (0, 1), f"{command}: {name} added {counts[name]} times"
    for name, action in catalogue_actions(parser).items():
        flag = FLAGS[name]
        # The catalogue's help, whatever default it shows: not a flag declared a second time.
        pattern = re.escape(flag.help).replace(re.escape("{default}"), ".+")
        assert re.fullmatch(pattern, action.help, re.S), f"{command}: {name} {action.help!r}"
        for key in ("type", "choices", "metavar", "dest"):
            if key in flag.options:
                assert getattr(action, key) == flag.options[key], f"{command}: {name} {key}"


def test_each_catalogue_flag_is_a_study_field_or_shared_by_commands() -> None:
    fields = {flag_of(field) for field in vars(DEFAULTS)}
    takers = Counter(name for parser in PARSERS.values() for name in catalogue_actions(parser))
    for name in FLAGS:
        assert takers[name] >= 1, f"{name}: in the catalogue, taken by no command"
        assert name in fields or takers[name] >= 2, f"{name}: one command's own flag"


def test_run_takes_every_catalogue_flag() -> None:
    assert set(catalogue_actions(PARSERS["run"])) == set(FLAGS)


def test_every_catalogue_default_is_the_study_config_default() -> None:
    for name, flag in FLAGS.items():
        dest = flag.options.get("dest", name.removeprefix("--").replace("-", "_"))
        if flag.default is not None:
            assert flag.default == getattr(DEFAULTS, dest), name
            assert "{default}" in flag.help, f"{name}: its default is never shown"
        else:
            assert "{default}" not in flag.help, f"{name}: shows a default it lacks"


@pytest.mark.parametrize("command", sorted(PARSERS))
def test_help_shows_the_study_config_default_or_the_commands_own(command: str) -> None:
    for name, action in catalogue_actions(PARSERS[command]).items():
        flag = FLAGS[name]
        if flag.default is None:
            continue
        study_default = getattr(DEFAULTS, action.dest)
        # A command that gives a flag a default of its own (experiment pipeline's --epochs)
        # shows that one: what a user gets by leaving the flag out. Left out of search.run, a
        # stored setting is None and means the study's value: the help shows a new study's.
        shown = study_default if action.default is None else action.default
        text = expanded_help(action)
        assert text.endswith(f"(default: {shown})"), f"{command}: {name}: {text!r}"
        assert text.count("(default:") == 1, f"{command}: {name}: {text!r}"


@pytest.mark.parametrize("command", sorted(set(PARSERS) - {"experiment pipeline"}))
def test_help_shows_the_study_config_default_where_the_command_keeps_it(command: str) -> None:
    for name, action in catalogue_actions(PARSERS[command]).items():
        if FLAGS[name].default is not None:
            value = getattr(DEFAULTS, action.dest)
            assert f"(default: {value})" in expanded_help(action), f"{command}: {name}"


def test_run_leaves_its_stored_settings_none_and_shows_a_new_studys_value() -> None:
    parser = PARSERS["run"]
    parsed = vars(parser.parse_args([]))
    actions = catalogue_actions(parser)
    for field in (*RECORDED, *RUN_SETTINGS):
        action = actions[flag_of(field)]
        assert action.dest == field
        assert parsed[field] is None, f"{flag_of(field)} defaults to {parsed[field]!r}"
        if FLAGS[flag_of(field)].default is not None:
            value = getattr(DEFAULTS, field)
            assert expanded_help(action).endswith(f"(default: {value})"), flag_of(field)


def test_run_gives_its_other_flags_the_study_config_defaults() -> None:
    parsed = vars(PARSERS["run"].parse_args([]))
    stored = {*RECORDED, *RUN_SETTINGS}
    for field, value in parsed.items():
        if field not in stored:
            assert value == getattr(DEFAULTS, field), field


def test_every_help_text_formats() -> None:
    for command, parser in PARSERS.items():
        text = parser.format_help()  # a stray % would raise here
        assert "%(" not in text and "{default}" not in text, command
    # The confirmation's help is written from its policy (search.config), not copied by hand.
    run_help = " ".join(PARSERS["run"].format_help().split())
    assert f"at least {MIN_FEASIBLE_FRACTION:.0%} of them" in run_help
    assert f"one-sided {HOLD_CONFIDENCE:.0%} prediction bound" in run_help
    assert f"up to {MAX_ROUNDS} rounds" in run_help
