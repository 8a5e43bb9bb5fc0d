"""``manage.py rota_worker``: the same command as ``rota worker``."""

from rota.cli import worker as _cli
from rota.management.commands._cli import management_command

Command = management_command(_cli)
