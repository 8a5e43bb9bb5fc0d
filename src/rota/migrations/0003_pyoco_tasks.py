"""Pyoco flow runs: task states, task records and the uploaded flow.yaml on the run."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("rota", "0002_ops_groups")]

    operations = [
        migrations.AddField(
            model_name="jobrun",
            name="tasks",
            field=models.JSONField(blank=True, default=dict),
        ),
        migrations.AddField(
            model_name="jobrun",
            name="task_records",
            field=models.JSONField(blank=True, default=dict),
        ),
        migrations.AddField(
            model_name="jobrun",
            name="task_records_truncated",
            field=models.BooleanField(default=False),
        ),
        migrations.AddField(
            model_name="jobrun",
            name="flow_yaml",
            field=models.TextField(blank=True),
        ),
    ]
