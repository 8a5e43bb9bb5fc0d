"""``python -m tests.pods.cli_entry ...``: the ``rota`` command with ``pods`` and
``topics`` wired in exactly as cli/main.py is to wire them, for the CLI tests
(the pods subsystem does not edit cli/main.py itself)."""

from __future__ import annotations

import sys
from types import SimpleNamespace

from rota.cli import main as rota_main
from rota.cli import pods


def main(argv: list[str] | None = None) -> int:
    commands = dict(rota_main.COMMANDS)
    commands["pods"] = pods
    commands["topics"] = SimpleNamespace(
        help=pods.topics_help, add_arguments=pods.topics_add_arguments, handle=pods.topics_handle
    )
    saved = rota_main.COMMANDS
    rota_main.COMMANDS = commands
    try:
        return rota_main.main(argv)
    finally:
        rota_main.COMMANDS = saved


if __name__ == "__main__":
    sys.exit(main())
