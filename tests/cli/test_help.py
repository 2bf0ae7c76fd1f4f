"""``--help`` of every command and the one-line errors on a typo ("did you mean ...")."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator

import pytest

from advlab.cli import parser
from tests.cli.helpers import run_cli


def _commands() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """(``advlab study prune``, its parser) for the top level and every (nested) subcommand."""

    def walk(p: argparse.ArgumentParser, path: str) -> Iterator[tuple[str, argparse.ArgumentParser]]:
        yield path, p
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, sub in a.choices.items():
                    yield from walk(sub, f"{path} {name}")

    yield from walk(parser(), "advlab")


COMMANDS = dict(_commands())


def test_the_walk_finds_nested_commands() -> None:
    assert {"advlab attack", "advlab study prune", "advlab analyze layers", "advlab prototypes"} <= set(COMMANDS)


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_every_option_has_help_and_no_empty_default(path: str) -> None:
    p = COMMANDS[path]
    for a in p._actions:
        if isinstance(a, (argparse._HelpAction, argparse._SubParsersAction, argparse._VersionAction)):
            continue
        assert a.help and a.help is not argparse.SUPPRESS, f"{path} {a.option_strings or a.dest} has no help"
    text = p.format_help()
    assert "(default: None)" not in text and "(default: False)" not in text and "(default: [])" not in text, path
    formatter = p._get_formatter()
    for a in (
        p._actions
    ):  # no option shows its default twice ("(default: untargeted) (default: None)", "(default 500) (default: 500)")
        if a.help and a.option_strings:
            shown = formatter._expand_help(a)
            assert len(re.findall(r"\bdefault\b", shown)) <= 1, f"{path} {a.option_strings}: {shown}"


def test_defaults_that_tell_something_are_shown() -> None:
    text = " ".join(COMMANDS["advlab attack"].format_help().split())
    assert "(default: 100)" in text  # --pngs
    assert "(default: 128)" in text  # --batch-size
    text = " ".join(COMMANDS["advlab study prune"].format_help().split())
    assert "(default 500)" in text and "(default: 500)" not in text  # --limit names its default itself


@pytest.mark.parametrize(
    "argv, near",
    [
        (["atack"], "'attack'"),
        (["study", "prnue"], "'prune'"),
        (["attack", "--model", "digits-cnn", "--data", "digits:test", "--attack", "pgd", "--stpes", "3"], "--steps"),
        (["study", "prune", "--model", "digits-cnn", "--data", "digits:test", "--lmit", "3"], "--limit"),
        (["prototypes", "--model", "digits-cnn", "--mode", "mxa"], "'max'"),
        (["--versoin"], "--version"),
    ],
)
def test_a_typo_gets_the_nearest_name_in_one_line(argv: list[str], near: str) -> None:
    rc, out, err = run_cli(argv)
    assert rc == 2 and out == ""
    assert err.count("\n") == 1, err
    assert f"did you mean {near}?" in err


def test_an_option_of_another_command_is_not_suggested() -> None:
    # --binary-search-steps is an attack option; classify has no such option and nothing near it
    rc, _, err = run_cli(["classify", "digits:test", "--model", "digits-cnn", "--binary-search-steps", "3"])
    assert rc == 2 and "unrecognized arguments: --binary-search-steps 3" in err and "did you mean" not in err


def test_a_far_typo_gets_no_suggestion() -> None:
    rc, _, err = run_cli(["zzzzzz"])
    assert rc == 2 and "did you mean" not in err and "invalid choice" in err and err.count("\n") == 1


def test_the_static_table_is_what_the_modules_register() -> None:
    """``advlab --help`` lists the commands from :data:`advlab.cli.COMMANDS` without importing their modules: the
    names, their order and each one-line help equal what the modules register."""
    from advlab.cli import COMMANDS as TABLE

    def listed(p: argparse.ArgumentParser) -> list[tuple[str, str | None]]:
        sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
        return [(c.dest, c.help) for c in sub._choices_actions]

    assert listed(parser()) == [(name, help_) for name, _, help_ in TABLE]
    assert parser(None).format_help() == parser().format_help()
    for name, module, _ in TABLE:  # parser(name): the real parsers of name's module (their --help), stubs else
        choices = next(a for a in parser(name)._actions if isinstance(a, argparse._SubParsersAction)).choices
        real = [n for n, p in choices.items() if "--help" in p._option_string_actions]
        assert real == [n for n, m, _ in TABLE if m == module] and name in real
