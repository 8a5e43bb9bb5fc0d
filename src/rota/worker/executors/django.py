"""The ``django`` executor: a job names a management command of the host
project; the worker runs ``python manage.py <command> <args> <params>`` in the
host's directory with the host's interpreter. Every value is one argv item,
never through a shell; output, exit status, timeout and cancel are handled
exactly as for ``command`` (this is a CommandExecutor with another argv)."""

from __future__ import annotations

import sys
from pathlib import Path

from rota.domain.snapshot import RunSnapshot
from rota.errors import RotaError
from rota.worker.executors.command import CommandExecutor, params_to_argv


def find_manage_py(configured: Path | None) -> Path | None:
    """The host's manage.py: the setting, else the script this process was
    started as (``python manage.py rota_worker``)."""
    if configured:
        return Path(configured).resolve()
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if script and script.name == "manage.py" and script.exists():
        return script.resolve()
    return None


class DjangoExecutor(CommandExecutor):
    def __init__(
        self, manage_py: Path, *, python: str | None = None, kill_grace: float = 2.0
    ) -> None:
        super().__init__(kill_grace=kill_grace)
        if not Path(manage_py).is_file():
            raise RotaError(
                f"manage.py not found at {manage_py}",
                hint="set ROTA['manage_py'] (or ROTA_MANAGE_PY) to the host project's manage.py",
            )
        self.manage_py = Path(manage_py)
        self.python = python or sys.executable
        self.cwd = str(self.manage_py.parent)

    def argv(self, snap: RunSnapshot) -> list[str]:
        return [
            self.python,
            str(self.manage_py),
            snap.target,
            *snap.args,
            *params_to_argv(snap.params),
        ]
