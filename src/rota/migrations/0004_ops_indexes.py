"""Indexes of the ops UI's runs table (issue 7): each sortable column with the
run id, so a sorted page of a million runs is one index scan, not a sort; the
(scheduled_for, id) index replaces the (scheduled_for) one, which PostgreSQL
preferred and then had to sort the rows sharing a value (the many NULLs); and
(worker_id, id) for the search by worker id prefix and the sort by worker.

The worker index is in the "C" collation on PostgreSQL: in any other, a
``LIKE 'prefix%'`` cannot be an index range there, and a search for one worker
among a million runs walked the whole index (0.4 s). rota.ops.table matches and
sorts by the same expression. SQLite knows no "C" collation and gets the plain
index. Django's model state does not list this index (it differs by database).
"""

from django.db import migrations, models

WORKER_INDEX = "rota_ops_run_worker"


def create_worker_index(apps, schema_editor):
    table = schema_editor.quote_name("rota_jobrun")
    collate = ' COLLATE "C"' if schema_editor.connection.vendor == "postgresql" else ""
    schema_editor.execute(f'CREATE INDEX "{WORKER_INDEX}" ON {table} ("worker_id"{collate}, "id")')


def drop_worker_index(apps, schema_editor):
    schema_editor.execute(f'DROP INDEX IF EXISTS "{WORKER_INDEX}"')


class Migration(migrations.Migration):
    dependencies = [("rota", "0003_pyoco_tasks")]

    operations = [
        migrations.AddIndex(
            model_name="jobrun",
            index=models.Index(fields=["scheduled_for", "id"], name="rota_ops_run_scheduled"),
        ),
        migrations.RemoveIndex(model_name="jobrun", name="rota_run_scheduled"),
        migrations.AddIndex(
            model_name="jobrun",
            index=models.Index(fields=["started_at", "id"], name="rota_ops_run_started"),
        ),
        migrations.AddIndex(
            model_name="jobrun",
            index=models.Index(fields=["finished_at", "id"], name="rota_ops_run_finished"),
        ),
        migrations.RunPython(create_worker_index, drop_worker_index),
    ]
