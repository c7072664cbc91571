"""Depth predictions kept on disk: each job's own (for rebuilds) and a small shared cache (for instant repeats).

A prediction is stored as an ``.npz`` holding ``values`` [H, W] and ``native`` [h, w] float32, ``kind`` and
``source`` (a converter DepthMap), and ``focal_px`` when the model estimated its camera (NaN when it did not).
The cache lives in ``OUTPUT_FOLDER/.cache/<key>.npz``, where the key is the
SHA-256 of the upload's bytes, then a hash of the model id and the precision: the same image converted again with the
same model skips the model, and every entry of one upload is found by its prefix (deleting a job erases them). It holds at most ``max_entries`` files (the least recently used go first) and the retention sweep
deletes entries older than the result time to live. Every write is atomic (temporary file, then rename), so a
reader in another process sees a whole entry or none.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
from pathlib import Path

from converter import DepthMap, OutputError
from converter.service_api import load_prediction, save_prediction

from .store import mtime

log = logging.getLogger(__name__)

DEFAULT_ENTRIES = 64


class DepthCache:
    """Model predictions by (upload bytes, model, precision), bounded by count and age."""

    def __init__(self, folder: str | os.PathLike, max_entries: int = DEFAULT_ENTRIES,
                 ttl_seconds: float = 24 * 3600):
        self.folder = Path(folder)
        self.max_entries = max(0, int(max_entries))
        self.ttl_seconds = ttl_seconds
        self._lock = threading.Lock()

    @staticmethod
    def key(upload_sha256: str, model: str, precision: str = "fp32") -> str:
        """The entry for an upload (its bytes' SHA-256, computed once when it arrived) under a model and precision."""
        under = hashlib.sha256(f"{model}\0{precision}".encode()).hexdigest()[:32]
        return f"{upload_sha256}-{under}"

    def bound(self, upload_sha256: str) -> "UploadPredictions":
        """This cache seen from one upload: a :class:`converter.PredictionCache` for the conversion to consult."""
        return UploadPredictions(self, upload_sha256)

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.npz"

    def get(self, key: str) -> DepthMap | None:
        if self.max_entries == 0:
            return None
        path = self.path(key)
        prediction = load_prediction(path)
        if prediction is not None:
            try:
                os.utime(path)  # recently used: evicted last
            except OSError:
                pass
        return prediction

    def put(self, key: str, prediction: DepthMap) -> None:
        """Store a prediction; never fails the conversion (a full disk only means no cache)."""
        if self.max_entries == 0:
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            save_prediction(self.path(key), prediction)
            self.evict()
        except (OSError, OutputError) as error:
            log.warning("could not cache a depth prediction: %s", error)

    def forget_upload(self, upload_sha256: str) -> int:
        """Delete every entry of one upload (under any model). Returns how many."""
        if not re.fullmatch(r"[0-9a-f]{64}", upload_sha256 or "") or not self.folder.is_dir():
            return 0
        found = list(self.folder.glob(f"{upload_sha256}-*.npz"))
        for path in found:
            path.unlink(missing_ok=True)
        return len(found)

    def forget_upload_of(self, store, job) -> int:
        """The entries of a deleted ``job``'s upload, unless another job of ``store`` was made from the same bytes."""
        if not job.upload_sha256 or store.shares_upload(job.id, job.upload_sha256):
            return 0
        return self.forget_upload(job.upload_sha256)

    def entries(self) -> list[Path]:
        """Cache files, oldest (least recently used) first."""
        if not self.folder.is_dir():
            return []
        files = [path for path in self.folder.glob("*.npz") if path.is_file()]
        return sorted(files, key=mtime)

    def evict(self) -> int:
        """Delete the oldest entries beyond ``max_entries``. Returns how many."""
        with self._lock:
            entries = self.entries()
            extra = entries[:max(0, len(entries) - self.max_entries)]
            for path in extra:
                path.unlink(missing_ok=True)
            return len(extra)

    def sweep(self) -> int:
        """Delete entries older than the time to live (and stale temporary files). Returns how many."""
        if not self.folder.is_dir():
            return 0
        removed, now = 0, time.time()
        for path in self.folder.iterdir():
            if path.is_file() and now - mtime(path) > self.ttl_seconds:
                path.unlink(missing_ok=True)
                removed += 1
        return removed + self.evict()


class UploadPredictions:
    """The predictions of one upload's bytes, by model and precision (:class:`converter.PredictionCache`)."""

    def __init__(self, cache: DepthCache, upload_sha256: str):
        self.cache, self.upload_sha256 = cache, upload_sha256

    def get(self, model: str, precision: str) -> DepthMap | None:
        return self.cache.get(self.cache.key(self.upload_sha256, model, precision))

    def put(self, model: str, precision: str, prediction: DepthMap) -> None:
        self.cache.put(self.cache.key(self.upload_sha256, model, precision), prediction)
