"""The ``rota`` command. Each subcommand is defined once, as an ``add_arguments``
and a ``handle`` function, so that the same definition can also be exposed as a
Django management command (``manage.py rota_<name>``) for projects that embed
rota."""
