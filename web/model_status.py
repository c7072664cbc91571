"""Load the depth model in the background at start-up and say whether it is ready, loading or unavailable.

The state is the state of the model the jobs use (this process's Converter), whoever loaded it: a conversion that
loaded it before the warm-up finished makes it ready, so no page says "loading" after a conversion has run."""

from __future__ import annotations

import logging
import threading

from converter import ConversionError, Converter
from converter.service_api import set_torch_threads

log = logging.getLogger(__name__)

LOADING, READY, UNAVAILABLE = "loading", "ready", "unavailable"


class ModelStatus:
    """Readiness of one Converter's model. ``start()`` loads it on a daemon thread so the server answers at once."""

    def __init__(self, converter: Converter, threads: int | None = None):
        self.converter = converter
        self.threads = threads
        self._state = LOADING
        self._message = f"The depth model '{converter.model}' loads with the first conversion."
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> "ModelStatus":
        with self._lock:
            if self._thread is None:
                self._message = f"The depth model '{self.converter.model}' is loading."
                self._thread = threading.Thread(target=self._load, name="model-preload", daemon=True)
                self._thread.start()
        return self

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    @property
    def state(self) -> str:
        return READY if self._serving() else self._state

    @property
    def message(self) -> str:
        return f"The depth model '{self.converter.model}' is ready." if self._serving() else self._message

    @property
    def ready(self) -> bool:
        return self.state == READY

    def _serving(self) -> bool:
        """Whether the jobs' model is in memory (loaded by the warm-up or by a conversion)."""
        return self._state == READY or self.converter.is_loaded

    @property
    def runs(self) -> dict:
        """What runs the model: engine and precision (as loaded once ready; as asked for before)."""
        return runs(self.converter)

    def _load(self) -> None:
        try:
            if self.threads:
                set_torch_threads(self.threads)
            self.converter.load()
        except ConversionError as error:
            self._state, self._message = UNAVAILABLE, error.message
            log.warning("%s", error.message)
        except Exception:
            log.exception("loading the depth model failed")
            self._state = UNAVAILABLE
            self._message = f"The depth model '{self.converter.model}' is unavailable: it failed to load."
        else:
            self._state, self._message = READY, f"The depth model '{self.converter.model}' is ready."
        finally:
            self._done.set()


def runs(converter: Converter) -> dict:
    """The engine and precision of ``converter``'s model: the loaded back-end's (an engine that fell back to torch
    says so), or the requested ones while it is not loaded."""
    if converter.is_loaded:
        described = converter.depth_model.describe()
        return {"engine": described["engine"], "precision": described["precision"]}
    return {"engine": converter.engine, "precision": converter.precision}
