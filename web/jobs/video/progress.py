"""A running video job's progress, kept in files of its folder (``progress/<part>.json``) so that every web instance
reads it and every worker writes its own part: each chunk of a clip wherever it runs, and the writing pass.
:func:`progress_view` adds them up (frames done and expected, frames per second, seconds left)."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

from converter.service_api import PREDICTING_VIDEO_DEPTH as PREDICTING
from converter.service_api import WRITING_VIDEO, atomic_output

from ..execution import JobCancelled, cancel_requested

log = logging.getLogger(__name__)

PROGRESS = "progress"  # the folder of a video job's progress parts
CHECK_EVERY = 0.5  # seconds between two reports of a part to its attempt


class ProgressPart:
    """One part's progress (a chunk, or the writing pass) in ``progress/<name>.json``: frames done of ``expected``,
    since when, written at every frame (a few bytes; frames take tens of milliseconds at least). ``check()`` runs at
    most every CHECK_EVERY seconds (it raises to stop the work: the Attempt's report, which saves the record); a
    cancel request or a deleted folder stops it at the next frame."""

    def __init__(self, folder: Path, name: str, expected: int | None, check=None):
        self.folder, self.name, self.expected = folder, name, expected
        self.check = check or (lambda: None)
        self.started = time.time()
        self._checked = 0.0
        self._lock = threading.Lock()
        self.update(0, force=True)

    def update(self, frames: int, force: bool = False) -> None:
        stop_if_cancelled(self.folder)
        now = time.monotonic()
        with self._lock:
            due, self._checked = now - self._checked >= CHECK_EVERY, now if now - self._checked >= CHECK_EVERY \
                else self._checked
        if due or force:
            self.check()
        record = {"frames": frames, "expected": self.expected, "started": self.started, "updated": time.time()}
        try:
            (self.folder / PROGRESS).mkdir(exist_ok=True)
            with atomic_output(self.folder / PROGRESS / f"{self.name}.json") as temporary:
                temporary.write_text(json.dumps(record))
        except Exception:  # progress is shown, never needed: a full disk fails the outputs, not this
            log.debug("could not record the progress of %s", self.folder, exc_info=True)


def stop_if_cancelled(folder: Path) -> None:
    """Raise JobCancelled once the job's folder holds ``cancel.requested`` or is gone (deleted)."""
    if cancel_requested(folder) or not folder.is_dir():
        raise JobCancelled()


def progress_view(folder: Path) -> dict | None:
    """A running video job's progress as the API shows it: phase, frames done and expected, frames per second,
    seconds left (None while unknown); None when no part has started."""
    parts = {}
    for path in sorted((folder / PROGRESS).glob("*.json")) if (folder / PROGRESS).is_dir() else ():
        try:
            parts[path.stem] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
    if not parts:
        return None
    if "video" in parts:
        phase, chosen = WRITING_VIDEO, [parts["video"]]
    else:
        phase, chosen = PREDICTING, list(parts.values())
    frames = sum(int(part.get("frames") or 0) for part in chosen)
    expected_parts = [part.get("expected") for part in chosen]
    expected = sum(expected_parts) if all(isinstance(value, int) for value in expected_parts) else None
    if phase == PREDICTING and "plan" in parts:
        expected = parts["plan"].get("expected")
    started = min(float(part.get("started") or time.time()) for part in chosen)
    elapsed = max(1e-6, time.time() - started)
    fps = frames / elapsed if frames else 0.0
    left = (max(0, expected - frames) / fps) if fps and expected else None
    share = min(1.0, frames / expected) if expected else 0.0
    # The job's progress bar: predicting chunks, then the writing pass (0.75 on), or the writing pass alone.
    if "plan" in parts:
        bar = 0.05 + 0.7 * share if phase == PREDICTING else 0.75 + 0.23 * share
    else:
        bar = 0.05 + 0.93 * share
    return {"phase": phase, "frames": frames, "expected": expected, "fps": round(fps, 3),
            "seconds_left": None if left is None else round(left, 1), "progress": round(bar, 3)}
