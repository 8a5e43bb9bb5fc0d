"""The CLI's output helpers and parser, as pure code (issue 21: what a newcomer reads)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import get_args

import pytest

from rota.cli.base import CommandError
from rota.cli.client import (
    duration_ms,
    human,
    json_arg,
    parse_params,
    table,
    timestamp,
    unauthorized_hint,
)
from rota.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]


def test_human_values_have_no_python_reprs():
    assert human({"name": "ops"}) == '{"name": "ops"}'
    assert human(["default", "gpu"]) == "default, gpu"
    assert human([]) == ""
    assert human(None) == ""
    assert human(True) == "yes" and human(False) == "no"
    assert human(30.0) == "30" and human(2.5) == "2.5"
    assert human({"nested": ["a"]}) == '{"nested": ["a"]}'


def test_one_timestamp_format_whatever_the_api_sent():
    assert timestamp("2026-12-02T16:33:36.855832+00:00") == "2026-12-02T16:33:36.855Z"
    assert timestamp("2026-12-02T16:33:36.855Z") == "2026-12-02T16:33:36.855Z"
    assert timestamp("2026-12-02T18:33:36+02:00") == "2026-12-02T16:33:36Z"
    assert human("2026-12-02T16:33:36.855832+00:00") == "2026-12-02T16:33:36.855Z"
    # Not instants: left alone.
    assert timestamp("2026-12-02T16:33:36") is None
    assert timestamp("hello") is None
    assert human("echo 2026-12-02T16:33:36Z") == "echo 2026-12-02T16:33:36Z"


def test_durations_are_rounded_for_reading():
    assert duration_ms(0.09179115295410156) == "0.0918 ms"
    assert duration_ms(41.23456) == "41.2 ms"
    assert duration_ms(3204.5) == "3.20 s"
    assert duration_ms(None) == ""


def test_table_headers_and_cells():
    out = table(
        [{"task_name": "greet", "tags": ["a", "b"], "enabled": True}],
        [("job", "task_name"), "tags", "enabled"],
    )
    header, row = out.splitlines()
    assert header.split() == ["JOB", "TAGS", "ENABLED"]
    assert row.split("  ")[0] == "greet" and "a, b" in row and "yes" in row
    assert "[" not in out and "True" not in out


def test_bad_json_says_which_option_and_where():
    with pytest.raises(CommandError) as exc:
        parse_params([], "{oops", "--payload")
    assert exc.value.message.startswith("--payload is not valid JSON")
    assert "line 1, column 2" in exc.value.message
    with pytest.raises(CommandError) as exc:
        json_arg('{\n  "a": 1,\n}', "--schema")
    assert "--schema" in exc.value.message and "line 3, column 1" in exc.value.message


def test_refused_token_hint_names_where_it_came_from():
    hint = unauthorized_hint("the environment variable ROTA_API_TOKEN")
    assert "ROTA_API_TOKEN" in hint and "unset ROTA_API_TOKEN" in hint
    assert "rota login" in unauthorized_hint("/home/u/.config/rota/credentials.json")


def test_kind_choices_are_the_kinds_the_api_accepts():
    from rota.api.schemas import JobIn
    from rota.models import ExecutorKind

    api_kinds = get_args(JobIn.model_fields["kind"].annotation)
    assert set(api_kinds) == {k.value for k in ExecutorKind}
    parser = build_parser()
    for kind in api_kinds:
        args = parser.parse_args(["jobs", "create", "j", "--kind", kind, "--target", "t"])
        assert args.kind == kind


def _readme_commands() -> list[list[str]]:
    """Every `rota ...` line of the README's shell blocks, as argv."""
    text = (ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        pending = ""
        for line in block.replace("\\\n", " ").splitlines():
            pending += line.replace("<run_id>", "RUN") + "\n"
            lexer = shlex.shlex(pending, posix=True, punctuation_chars=";&|")
            lexer.whitespace_split = True
            try:
                tokens = [*lexer, ";"]
            except ValueError:  # a quote that goes on over the next line
                continue
            pending = ""
            argv: list[str] = []
            for token in tokens:
                if token in (";", "&&", "|", "||", "&"):
                    if argv and argv[0] == "rota":
                        commands.append(argv[1:])
                    argv = []
                else:
                    argv.append(token)
    return commands


def test_every_readme_command_parses():
    commands = _readme_commands()
    assert ["jobs", "edit", "bill", "--subscribe", "order.paid"] in commands
    parser = build_parser()
    for argv in commands:
        try:
            parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"README: `rota {' '.join(argv)}` does not parse")


def test_readme_needs_no_curl_to_change_a_job():
    assert "-X PATCH" not in (ROOT / "README.md").read_text()
