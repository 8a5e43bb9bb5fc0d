"""``manage.py rota_celery``: the same command as ``rota celery``."""

from rota.cli import celery as _cli
from rota.management.commands._cli import management_command

Command = management_command(_cli)
