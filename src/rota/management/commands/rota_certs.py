"""``manage.py rota_certs``: the same command as ``rota certs``."""

from rota.cli import certs as _cli
from rota.management.commands._cli import management_command

Command = management_command(_cli)
