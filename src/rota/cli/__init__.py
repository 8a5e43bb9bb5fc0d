"""The ``rota`` command. Each subcommand is defined once (an ``add_arguments`` and
a ``handle`` function) and exposed both as ``rota <name>`` and, for projects that
embed rota, as ``manage.py rota_<name>``."""
