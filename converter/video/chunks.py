"""A long clip's depth in chunks of frames, predicted apart (on several workers) and joined into one prediction.

    plan_chunks ──► predict_chunk × N (any order, anywhere: each writes one .npz) ──► ChunkedPredictions ──►
    convert_video(..., predictions=...) (the usual stabilisation, rendering and encoding, in one pass)

A chunk is a span of the source's time; all but the first also predict ``overlap`` frames before their span (their
*lead*). Chunks are joined in order: chunk k's disparity is fitted by a robust scale and shift (scale only for metric
depth; :func:`converter.align.fit_inverse_depth`) to chunk k − 1's, already joined, on the frames both predicted, and
those shared frames are cross-faded from the one to the other. So a model's drift between chunks is removed before the
clip's own stabiliser sees it, and nothing jumps where two workers' chunks meet. Predictions are kept at the model's
own grid (float16: a relative model's disparity to 1 part in 1,000, below its frame-to-frame noise) and resized to the
frame as a single prediction is; frames are matched to predictions by their time, never by counting.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from ..align import fit_inverse_depth
from ..depth import INVERSE_RELATIVE, METRIC, DepthMap
from ..errors import ConversionError, OptionError
from ..exports.files import atomic_output
from . import decode as decoding
from .limits import VideoLimits
from .options import VideoOptions

CHUNK_FRAMES = 48  # frames of one chunk: minutes of a CPU's forwards, small beside a clip's
OVERLAP_FRAMES = 4  # frames a chunk predicts before its own span, to be joined to the one before
FIT_THRESHOLD = 0.05
MISSING = "A chunk of the video's depth is missing; the conversion cannot be assembled."


@dataclass(frozen=True)
class Chunk:
    """index: its place; start, end: the source seconds of its own frames (end None: to the clip's end); lead: the
    seconds before ``start`` it predicts too (0 for the first)."""

    index: int
    start: float
    end: float | None
    lead: float

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Chunk":
        return cls(**data)


def plan_chunks(path, options: VideoOptions, limits: VideoLimits, chunk_frames: int = CHUNK_FRAMES,
                overlap: int = OVERLAP_FRAMES) -> tuple[list[Chunk], int | None]:
    """(the chunks, the frames expected) of a video: one chunk when it is no longer than ``chunk_frames`` or its
    length is not declared, else ceil(frames / chunk_frames) chunks that each predict the same number of frames
    (the first owns ``overlap`` frames more than the others, which predict ``overlap`` frames of lead): the busiest
    worker bounds the clip's time. Checks the video against the limits first (decoding.probe)."""
    if chunk_frames < 2 or overlap < 1 or overlap >= chunk_frames:
        raise OptionError("A chunk needs at least 2 frames and an overlap from 1 to one frame less than a chunk.")
    info = decoding.probe(path, limits, options)
    expected = decoding.expected_frames(info, options, limits)
    if not expected or expected <= chunk_frames:
        return [Chunk(0, options.start, options.end, 0.0)], expected
    rate = min(info.fps, options.max_fps or math.inf)
    count = math.ceil(expected / chunk_frames)
    # Every chunk predicts as many frames, its lead included: the first, which has no lead, owns `overlap` more.
    predicted = (expected + (count - 1) * overlap) / count
    bounds = [round(predicted + k * (predicted - overlap)) for k in range(count - 1)]
    last_end = options.end
    if options.max_frames is not None and expected >= options.max_frames:  # no chunk past the frames kept
        last_end = options.start + (expected + 0.5) / rate
    starts = [0, *bounds]
    chunks = [Chunk(k, options.start + starts[k] / rate,
                    options.start + bounds[k] / rate if k < count - 1 else last_end,
                    overlap / rate if k else 0.0) for k in range(count)]
    return chunks, expected


def predict_chunk(path, chunk: Chunk, backend, options: VideoOptions, limits: VideoLimits, target,
                  progress=None, deadline: float | None = None) -> int:
    """Predict the depth of ``chunk``'s frames (lead included) with ``backend`` and write them to ``target`` (an
    .npz, atomically); ``progress(frames)`` after each frame of its own span (it may raise to stop). Returns the
    frames of its own span."""
    from .pipeline import predict_frames

    info = decoding.probe(path, limits, options)
    begin = max(options.start, chunk.start - chunk.lead)
    chunk_options = replace(options, start=begin, end=chunk.end, max_frames=None)
    times, natives, focals = [], [], []
    own = 0
    batch_size = options.batch_frames or (8 if str(getattr(backend, "device", "")).startswith("cuda") else 1)
    batch: list = []

    def flush():
        nonlocal own
        for frame, prediction in zip(batch, predict_frames(backend, [f.rgb for f in batch])):
            native = np.asarray(prediction.native, dtype=np.float32)
            times.append(frame.time)
            natives.append(native.astype(np.float16))
            width = prediction.values.shape[1]
            focals.append(prediction.focal_px * native.shape[1] / width if prediction.focal_px else np.nan)
            if frame.time >= chunk.start - 1e-6:
                own += 1
                if progress is not None:
                    progress(own)
        batch.clear()

    for frame in decoding.decode(info, chunk_options, limits, deadline):
        batch.append(frame)
        if len(batch) >= batch_size:
            flush()
    if batch:
        flush()
    if len({array.shape for array in natives}) != 1:  # a stream that changed size: one grid for the chunk
        first = natives[0].shape
        natives = [_resize(array, first) for array in natives]
    with atomic_output(target) as temporary, open(temporary, "wb") as handle:
        np.savez(handle, times=np.asarray(times, np.float64), natives=np.stack(natives),
                 focals=np.asarray(focals, np.float64), kind=np.asarray(backend.kind), start=np.float64(chunk.start),
                 lead=np.float64(chunk.lead))
    return own


class ChunkedPredictions:
    """The predictions of every chunk as one, for :func:`converter.video.convert_video` (``predictions=``): call
    ``for_frame(frame)`` with the clip's frames in time order. Holds two chunks at a time. ``model_name`` and
    ``engine``: what predicted them; ``predicted_by``: who predicted each chunk, where known (for the sidecar; or a
    callable giving that list, asked when the sidecar is written).

    The chunks may still be on their way: ``ready(index)`` is called before chunk ``index``'s file is read and
    returns once it is written (it may raise to stop), and ``chunks`` (the plan) gives their spans without opening
    their files. So the writing pass starts on the first chunk while the others are still predicted."""

    def __init__(self, paths: list[Path], model_name: str | None = None, engine: dict | None = None,
                 predicted_by=None, chunks: list[Chunk] | None = None, ready=None):
        if not paths:
            raise OptionError("No chunks to join.")
        self.paths = [Path(path) for path in paths]
        self.model_name, self.engine, self._predicted_by = model_name, engine, predicted_by
        self._ready = ready or (lambda index: None)
        self._spans: dict[int, dict] = {} if chunks is None else \
            {chunk.index: {"start": chunk.start, "lead": chunk.lead} for chunk in chunks}
        first = self._load(0)
        self.kind = str(first["kind"])
        self.metric = self.kind == METRIC
        self.fits: list[dict] = [{"chunk": 0, "scale": 1.0, "shift": 0.0, "inlier_share": None, "frames": 0}]
        self._loaded = {0: first}
        self._current = 0

    @property
    def predicted_by(self) -> list[str | None] | None:
        return self._predicted_by() if callable(self._predicted_by) else self._predicted_by

    def describe(self) -> dict:
        """How the chunks were joined (the sidecar's "chunks")."""
        described = {"count": len(self.paths), "method": "robust scale" + ("" if self.metric else " and shift") +
                     " in inverse depth to the chunk before on the frames both predicted, cross-faded over them "
                     "(converter.video.chunks)", "joins": self.fits}
        predicted_by = self.predicted_by
        if predicted_by and any(predicted_by):
            described["predicted_by"] = list(predicted_by)
        return described

    def for_frame(self, frame) -> DepthMap:
        """The joined prediction for the frame at ``frame.time`` (at the model's grid; resize it to the frame)."""
        while self._current + 1 < len(self.paths) and frame.time >= self._start(self._current + 1) - 1e-6:
            self._advance()
        chunk = self._loaded[self._current]
        disparity, focal = self._nearest(chunk, frame.time)
        following = self._current + 1
        if following < len(self.paths):
            begins = self._start(following) - self._lead(following)
            if frame.time >= begins - 1e-6 and self._lead(following) > 0:
                later = self._chunk(following)
                weight = min(1.0, max(0.0, (frame.time - begins) / self._lead(following)))
                other, _ = self._nearest(later, frame.time)
                if other.shape == disparity.shape:
                    disparity = (1 - weight) * disparity + weight * other
        values = self._values(disparity)
        return DepthMap(values=values, native=values, kind=self.kind, source="model",
                        focal_px=None if not np.isfinite(focal) else float(focal))

    # ------------------------------------------------------------------------------------------------ joining

    def _advance(self) -> None:
        self._chunk(self._current + 1)
        self._loaded.pop(self._current - 1, None)
        self._current += 1

    def _chunk(self, index: int) -> dict:
        """Chunk ``index``, loaded and joined to the one before (which is loaded)."""
        if index not in self._loaded:
            data = self._load(index)
            self._join(self._loaded[index - 1], data, index)
            self._loaded[index] = data
        return self._loaded[index]

    def _join(self, before: dict, data: dict, index: int) -> None:
        xs, ys = [], []
        for position, moment in enumerate(data["times"]):
            if moment >= float(data["start"]) - 1e-6:
                break
            reference, _ = self._nearest(before, moment)
            mine = data["disparity"][position]
            if reference.shape == mine.shape:
                xs.append(mine)
                ys.append(reference)
        fit = None
        if xs:
            x, reference = np.concatenate(xs), np.concatenate(ys)
            with np.errstate(divide="ignore", invalid="ignore"):
                target = np.where(np.isfinite(reference) & (reference > 0), 1.0 / reference, np.nan)
            try:
                fit = fit_inverse_depth(np.nan_to_num(x), target, np.isfinite(x) & np.isfinite(target),
                                        threshold=FIT_THRESHOLD, shift=not self.metric)
            except OptionError:
                fit = None
        scale, shift = (fit.scale, fit.shift) if fit is not None else (1.0, 0.0)
        data["disparity"] = (np.float32(scale) * data["disparity"] + np.float32(shift)).astype(np.float32)
        self.fits.append({"chunk": index, "scale": float(scale), "shift": float(shift),
                          "inlier_share": None if fit is None else float(fit.inlier_share), "frames": len(xs)})

    def _load(self, index: int) -> dict:
        self._ready(index)
        try:
            with np.load(self.paths[index], allow_pickle=False) as stored:
                data = {name: stored[name] for name in ("times", "natives", "focals", "kind", "start", "lead")}
        except (OSError, ValueError, KeyError, EOFError):
            raise ConversionError(MISSING) from None
        natives = data.pop("natives").astype(np.float32)
        if str(data["kind"]) == INVERSE_RELATIVE:
            data["disparity"] = np.where(np.isfinite(natives), natives, np.nan).astype(np.float32)
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                data["disparity"] = np.where(np.isfinite(natives) & (natives > 0), 1.0 / natives,
                                             np.nan).astype(np.float32)
        return data

    def _start(self, index: int) -> float:
        return float(self._chunk(index)["start"]) if index in self._loaded else self._peek(index, "start")

    def _lead(self, index: int) -> float:
        return float(self._loaded[index]["lead"]) if index in self._loaded else self._peek(index, "lead")

    def _peek(self, index: int, name: str) -> float:
        if index not in self._spans:
            self._ready(index)
            try:
                with np.load(self.paths[index], allow_pickle=False) as stored:
                    self._spans[index] = {"start": float(stored["start"]), "lead": float(stored["lead"])}
            except (OSError, ValueError, KeyError, EOFError):
                raise ConversionError(MISSING) from None
        return self._spans[index][name]

    @staticmethod
    def _nearest(chunk: dict, moment: float) -> tuple[np.ndarray, float]:
        position = int(np.argmin(np.abs(chunk["times"] - moment)))
        return chunk["disparity"][position], float(chunk["focals"][position])

    def _values(self, disparity: np.ndarray) -> np.ndarray:
        """Joined disparity → the prediction's own values (disparity, or metric depth)."""
        if not self.metric:
            return disparity.astype(np.float32)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(np.isfinite(disparity) & (disparity > 0), 1.0 / disparity, np.nan).astype(np.float32)


def _resize(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(array.astype(np.float32)).resize((shape[1], shape[0]),
                                                                      Image.Resampling.BILINEAR), dtype=np.float16)
