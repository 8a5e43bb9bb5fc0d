"""``manage.py rota_doctor``: the same command as ``rota doctor``."""

from rota.cli import doctor as _cli
from rota.management.commands._cli import management_command

Command = management_command(_cli)
