"""The job lifecycle: the job record and its states, the store on the shared folder, one attempt (execution), the
conversion and later exports, and the back-ends that run them (embedded threads; Celery in web.jobs.celery)."""
