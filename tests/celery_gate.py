"""The real Celery worker (web.jobs.celery.worker) with the tests' holds (tests/holds.py) around its jobs and exports:
`celery -A celery_gate worker` with tests/ on PYTHONPATH."""

from holds import held

from web.jobs.celery import worker as celery_worker
from web.jobs.celery.worker import app  # noqa: F401 (celery -A finds the app here; importing registers the tasks)

celery_worker.run_job = held("HOLD_CONVERSIONS_WHILE", celery_worker.run_job)
celery_worker.Exports.run = held("HOLD_EXPORTS_WHILE", celery_worker.Exports.run)
