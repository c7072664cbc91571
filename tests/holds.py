"""Holds for work inside real servers: while the file that HOLD_CONVERSIONS_WHILE (HOLD_EXPORTS_WHILE) names exists,
a conversion (an export) waits before its work, so a test decides when work may end instead of hoping it is slow
enough. Without the variables or the files: no effect.

This file is also a gunicorn config file (``--config tests/holds.py``, see conftest.holding): gunicorn calls its
``post_worker_init`` once a worker has loaded the real app. Celery workers load it through tests/celery_gate.py.
"""

import os
import time
from pathlib import Path


def held(variable: str, function):
    """``function``, waiting first while the file named by the environment variable ``variable`` exists."""
    def run(*args, **kwargs):
        hold = os.environ.get(variable)
        while hold and Path(hold).exists():
            time.sleep(0.02)
        return function(*args, **kwargs)
    return run


def post_worker_init(worker):
    runner = worker.wsgi.extensions["image_to_3d"].runner
    runner.convert = held("HOLD_CONVERSIONS_WHILE", runner.convert)
    runner.export = held("HOLD_EXPORTS_WHILE", runner.export)
