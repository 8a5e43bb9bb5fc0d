"""rota and Celery: the Celery app rota sends through (:func:`load_app`), the
import of a Celery project's tasks and periodic tasks (:mod:`rota.celery.importer`),
and a ``celery beat`` scheduler backed by rota's schedules
(:mod:`rota.celery.beat`). The executor is :mod:`rota.worker.executors.celery`;
the pure parts are in :mod:`rota.domain.celery`. docs/celery.md tells the story.
"""
