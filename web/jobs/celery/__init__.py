"""The Celery back-end: the shared Redis keys (board), the web tier's submitter and watch (submit), the worker
(worker: ``celery -A web.jobs.celery.worker worker``)."""
