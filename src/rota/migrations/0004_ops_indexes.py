"""Indexes of the ops UI's runs table (issue 7): each sortable column with the
run id, so a sorted page of a million runs is one index scan, not a sort; the
(scheduled_for, id) index replaces the (scheduled_for) one, which PostgreSQL
preferred and then had to sort the rows sharing a value (the many NULLs); and a
pattern index for the search by worker id prefix."""

from django.db import migrations, models


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
        migrations.AddIndex(
            model_name="jobrun",
            index=models.Index(fields=["worker_id", "id"], name="rota_ops_run_worker"),
        ),
        migrations.AddIndex(
            model_name="jobrun",
            index=models.Index(
                fields=["worker_id"],
                name="rota_ops_run_worker_like",
                opclasses=["varchar_pattern_ops"],
            ),
        ),
    ]
