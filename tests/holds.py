"""Holds for work inside real servers: while the file that HOLD_CONVERSIONS_WHILE (HOLD_EXPORTS_WHILE) names exists,
a conversion (an export) waits before its work, and while the file HOLD_VIDEO_WHILE names exists a video job waits
once HOLD_VIDEO_AFTER_FRAMES frames are done, so a test decides when work may end instead of hoping it is slow
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


def held_after_frames(update):
    """A video part's progress update (web.jobs.video.progress.ProgressPart.update) that, once HOLD_VIDEO_AFTER_FRAMES
    frames are done and recorded, waits while the file HOLD_VIDEO_WHILE names exists: the job is seen running with
    frames done and expected, for as long as a test needs."""
    def run(self, frames, force=False):
        update(self, frames, force)
        hold, after = os.environ.get("HOLD_VIDEO_WHILE"), int(os.environ.get("HOLD_VIDEO_AFTER_FRAMES") or 1)
        while hold and frames >= after and Path(hold).exists():
            time.sleep(0.02)
    return run


def post_worker_init(worker):
    runner = worker.wsgi.extensions["image_to_3d"].runner
    runner.convert = held("HOLD_CONVERSIONS_WHILE", runner.convert)
    runner.export = held("HOLD_EXPORTS_WHILE", runner.export)
    if os.environ.get("HOLD_VIDEO_WHILE"):
        from web.jobs.video.progress import ProgressPart

        ProgressPart.update = held_after_frames(ProgressPart.update)
