"""The video pipeline: decode → depth → stabilise → render → encode, streaming, in three threads.

    decoder thread ──(≤ QUEUE_FRAMES frames)──► depth (the caller's thread: the model, frames batched on CUDA)
        ──(≤ QUEUE_FRAMES frames + depth)──► writer thread: stabilise, render every output, encode

The queues are bounded, so memory holds a fixed window of frames whatever the clip's length, and decoding, the
stabilisation, the rendering and the encoding overlap with the model's forward. The camera is one for the clip: the
user's, else the container's (QuickTime's 35 mm focal length), else the model's own estimate (Depth Pro: the median
over the first CAMERA_FRAMES frames, which wait for it), else 60°. A failure anywhere stops all three threads,
removes every partial output and is raised in the caller's thread.
"""

from __future__ import annotations

import contextlib
import math
import os
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .. import geometry
from ..align import inverse_depth
from ..depth import INVERSE_RELATIVE, METRIC, DepthMap, fit_depth_to_image
from ..errors import ConversionError, DepthFileError, OptionError, VideoTooLargeError
from ..exports.files import write_json
from . import decode as decoding
from . import render
from .depth_frames import depth_frames
from .encode import COPYABLE_AUDIO, FrameZip, VideoWriter, ply_bytes, png16_bytes
from .kinds import VIDEO_OUTPUTS, video_kind_for_path
from .limits import VideoLimits
from .options import VideoOptions
from .stabilise import THRESHOLD, Stabiliser

QUEUE_FRAMES = 8
WRITER_NICENESS = 19  # the decoder's and writer's nice value, the lowest priority (see yield_to_the_forward)
CAMERA_FRAMES = 8
_END = object()


@dataclass(frozen=True)
class VideoProgress:
    """Where a conversion stands: frames written, the frames expected (None: unknown), seconds so far."""

    frames: int
    expected: int | None
    seconds: float

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


@dataclass
class VideoResult:
    """A converted video: the files written ({kind: path}) and :meth:`metadata` (the sidecar's content)."""

    outputs: dict[str, Path]
    info: dict = field(default_factory=dict)

    @property
    def frames(self) -> int:
        return int(self.info["frames"])

    def metadata(self) -> dict:
        return self.info


def convert_video(source, outputs, *, depth_model: Callable | None = None, model_name: str | None = None,
                  depth=None, options: VideoOptions | None = None, limits: VideoLimits | None = None,
                  progress: Callable[[VideoProgress], None] | None = None, predictions=None) -> VideoResult:
    """Convert the video ``source`` (path, bytes or binary file) into ``outputs`` ({kind: path}, or one path / a list
    of paths whose endings name the kinds, see :data:`converter.video.VIDEO_OUTPUTS`). ``depth_model``: a callable
    giving the loaded depth back-end (called once); ``depth``: a depth video of your own instead (see
    :mod:`converter.video.depth_frames`); ``predictions``: the model's depth predicted beforehand, in chunks
    (:class:`converter.video.chunks.ChunkedPredictions`). ``progress`` is called after each frame written (from the
    writer thread; it may raise to stop the conversion)."""
    options = options if options is not None else VideoOptions()
    limits = limits if limits is not None else VideoLimits.from_environment()
    targets = plan(outputs)
    if depth is None and depth_model is None and predictions is None:
        raise OptionError("A video conversion needs a depth model or a depth video of your own.")
    started = time.monotonic()
    deadline = started + limits.deadline_seconds
    with _as_file(source, limits) as path:
        info = decoding.probe(path, limits, options)
        run = _Run(info, targets, options, limits, deadline, progress, started)
        if predictions is not None:
            depths, backend, metric = predictions, None, predictions.metric
            run.predictions = predictions
        elif depth is not None:
            depths, backend = depth_frames(depth, options.depth_kind, limits), None
            metric = options.depth_kind == "metric"
        else:
            backend, depths = depth_model(), None
            metric = backend.kind == METRIC
        return run.execute(depths, backend, metric, model_name)


def plan(outputs) -> dict[str, Path]:
    """{kind: path} from a dict, one path, or a list of paths (their endings name the kinds)."""
    if isinstance(outputs, dict):
        unknown = [kind for kind in outputs if kind not in VIDEO_OUTPUTS]
        if unknown:
            raise OptionError(f"Unknown video output(s): {', '.join(unknown)}.")
        targets = {kind: Path(path) for kind, path in outputs.items()}
    else:
        paths = [outputs] if isinstance(outputs, (str, os.PathLike)) else list(outputs)
        targets = {video_kind_for_path(path).name: Path(path) for path in paths}
    if not targets:
        raise OptionError("Name at least one output for the video.")
    return targets


class _Run:
    """One conversion's threads, writers and bookkeeping."""

    def __init__(self, info, targets, options, limits, deadline, progress, started):
        self.info, self.targets, self.options, self.limits = info, targets, options, limits
        self.deadline, self.progress, self.started = deadline, progress, started
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.conversions: dict = {}
        self.writers: dict = {}
        self.fits: list[dict] = []
        self.times: list[float] = []
        self.timings = {"depth": 0.0, "write": 0.0}
        self.expected = decoding.expected_frames(info, options, limits)
        self.intrinsics: geometry.Intrinsics | None = None
        self.model_focals: list[float] = []
        self.predictions = None  # the model's depth predicted beforehand in chunks, when it was

    # ------------------------------------------------------------------------------------------------ the threads

    def execute(self, depths, backend, metric: bool, model_name: str | None) -> VideoResult:
        frames_q: queue.Queue = queue.Queue(QUEUE_FRAMES)
        work_q: queue.Queue = queue.Queue(QUEUE_FRAMES)
        self.metric = metric
        self.stabiliser = Stabiliser(metric, self.options.stabilise)
        decoder = threading.Thread(target=self._guard, args=(self._decode, frames_q), name="video-decode", daemon=True)
        writer = threading.Thread(target=self._guard, args=(self._write, work_q), name="video-write", daemon=True)
        decoder.start()
        writer.start()
        try:
            self._depth(frames_q, work_q, depths, backend, model_name)
        except BaseException as error:  # noqa: BLE001 - stop the others, then raise it here
            self._fail(error)
        self._put(work_q, _END)
        writer.join()
        self.stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                frames_q.get_nowait()  # unblock a decoder waiting to put
        decoder.join()
        if self.errors:
            self._abort()
            raise self.errors[0]
        return self._finish(backend, model_name)

    def _guard(self, work, *args) -> None:
        yield_to_the_forward()
        try:
            work(*args)
        except BaseException as error:  # noqa: BLE001 - handed to the caller's thread
            self._fail(error)

    def _fail(self, error: BaseException) -> None:
        self.errors.append(error)
        self.stop.set()

    def _put(self, target: queue.Queue, item) -> bool:
        while True:
            if self.stop.is_set() and item is not _END:
                return False
            try:
                target.put(item, timeout=0.1)
                return True
            except queue.Full:
                if self.stop.is_set():
                    return False

    def _get(self, source: queue.Queue):
        while True:
            try:
                return source.get(timeout=0.1)
            except queue.Empty:
                if self.stop.is_set():
                    return _END

    def _decode(self, frames_q: queue.Queue) -> None:
        try:
            for frame in decoding.decode(self.info, self.options, self.limits, self.deadline, self.conversions):
                if not self._put(frames_q, frame):
                    return
        finally:
            self._put(frames_q, _END)

    def _depth(self, frames_q, work_q, depths, backend, model_name) -> None:
        batch_size = self.options.batch_frames or (8 if backend is not None and
                                                   str(backend.device).startswith("cuda") else 1)
        held: list = []  # frames waiting for the camera (the model's estimate)
        ended = False
        while not ended and not self.stop.is_set():
            batch = []
            while len(batch) < batch_size:
                item = self._get(frames_q) if not batch else _poll(frames_q)
                if item is None:
                    break
                if item is _END:
                    ended = True
                    break
                batch.append(item)
            if not batch:
                break
            started = time.perf_counter()
            maps = predict_frames(backend, [f.rgb for f in batch]) if backend is not None else \
                [self._brought(depths, frame) for frame in batch]
            self.timings["depth"] += time.perf_counter() - started
            for frame, prediction in zip(batch, maps):
                held.append((frame, prediction))
            if self.intrinsics is None and not self._decide_camera(held, model_name, ended):
                continue
            for frame, prediction in held:
                if not self._put(work_q, (frame, self._disparity(prediction))):
                    return
            held = []
        if held and not self.stop.is_set():
            self._decide_camera(held, model_name, True)
            for frame, prediction in held:
                self._put(work_q, (frame, self._disparity(prediction)))
        if depths is not None and not hasattr(depths, "for_frame") and not self.stop.is_set() \
                and next(depths, None) is not None:
            self.conversions["unused_depth_frames"] = True

    def _brought(self, depths, frame) -> DepthMap:
        height, width = frame.rgb.shape[:2]
        if hasattr(depths, "for_frame"):  # the model's, predicted in chunks: resized as a single prediction is
            return depths.for_frame(frame).resized(width, height)
        prediction = next(depths, None)
        if prediction is None:
            raise DepthFileError(f"The depth video has fewer frames than the video: none for frame {frame.index + 1}.")
        height, width = frame.rgb.shape[:2]
        prediction, _ = fit_depth_to_image(prediction, width, height)
        return prediction

    def _decide_camera(self, held, model_name, ended: bool) -> bool:
        """Set the clip's camera once it can be decided; False while the model's estimate needs more frames."""
        height, width = held[0][0].rgb.shape[:2]
        focals = [p.focal_px for _, p in held if p.focal_px]
        user = self.options.focal_px is not None or self.options.fov_deg is not None
        if focals and not user and self.info.focal_px is None and len(focals) < CAMERA_FRAMES and not ended:
            return False
        model_focal = float(np.median(focals)) if focals else None
        self.intrinsics = geometry.make_intrinsics(
            width, height, fov_deg=self.options.fov_deg, focal_px=self.options.focal_px,
            exif_focal_px=self.info.focal_px, exif_source="container:quicktime focal_length.35mm_equivalent",
            model_focal_px=model_focal, model_name=model_name)
        return True

    def _disparity(self, prediction: DepthMap) -> np.ndarray:
        """Affine in inverse depth; a metric model's per-frame camera replaced by the clip's (depth ∝ its f)."""
        disparity = inverse_depth(prediction)
        if prediction.kind == METRIC and prediction.focal_px:
            disparity = disparity * np.float32(prediction.focal_px / self.intrinsics.fx)
        return disparity

    def _write(self, work_q: queue.Queue) -> None:
        while True:
            item = self._get(work_q)
            if item is _END or self.stop.is_set():
                return
            if time.monotonic() > self.deadline:
                raise VideoTooLargeError(f"The video took longer than the {self.limits.deadline_seconds:g} s a video "
                                         "job may take.")
            started = time.perf_counter()
            frame, disparity = item
            stabilised, fit = self.stabiliser(frame.index, frame.time, disparity, frame.rgb)
            self.fits.append(fit.to_dict())
            self.times.append(frame.time)
            self._render(frame, stabilised, self.stabiliser.bounds)
            self.timings["write"] += time.perf_counter() - started
            if self.progress is not None:
                self.progress(VideoProgress(len(self.times), self.expected, time.monotonic() - self.started))

    # ------------------------------------------------------------------------------------------------ outputs

    def _render(self, frame, inverse, bounds) -> None:
        seconds = frame.time - self.times[0]
        height, width = frame.rgb.shape[:2]
        for kind, picture in render.stereo_frames(self.targets, frame.rgb, inverse, bounds, self.options).items():
            self._writer(kind, picture).write(picture, seconds)
        if "depth_video" in self.targets:
            picture = render.depth_picture(inverse, bounds)
            self._writer("depth_video", picture).write(picture, seconds)
        name = f"frame_{frame.index:06d}"
        if "depth16" in self.targets:
            self._zip("depth16").add(f"{name}.png", png16_bytes(render.depth16(inverse, bounds, self.metric)))
        if "ply_sequence" in self.targets:
            points, colours = render.cloud(frame.rgb, inverse, bounds, self.metric, self.intrinsics, self.options)
            comments = [f"frame {frame.index} at {frame.time:.6f} s", "axes: right-handed, y up, camera looking down -z",
                        f"units: {'metres' if self.metric else 'relative units'}",
                        f"intrinsics: fx={self.intrinsics.fx:.3f} cx={self.intrinsics.cx:.2f} "
                        f"cy={self.intrinsics.cy:.2f} size={width}x{height}"]
            self._zip("ply_sequence").add(f"{name}.ply", ply_bytes(points, colours, comments))

    def _writer(self, kind: str, picture: np.ndarray) -> VideoWriter:
        writer = self.writers.get(kind)
        if writer is None:
            rate = min(self.info.fps, self.options.max_fps or math.inf)
            writer = VideoWriter(self.targets[kind], picture.shape[1], picture.shape[0], rate,
                                 chroma444=kind == "anaglyph", audio_from=self.info.path if self.info.has_audio else None,
                                 audio_start=self.times[0])
            self.writers[kind] = writer
        return writer

    def _zip(self, kind: str) -> FrameZip:
        if kind not in self.writers:
            self.writers[kind] = FrameZip(self.targets[kind])
        return self.writers[kind]

    def _abort(self) -> None:
        for writer in self.writers.values():
            writer.abort()

    def _finish(self, backend, model_name) -> VideoResult:
        if not self.times:
            raise ConversionError("The video gave no frames.")
        rate = min(self.info.fps, self.options.max_fps or math.inf)
        end = self.times[-1] - self.times[0] + 1.0 / rate
        info = self._metadata(backend, model_name, rate, end)
        try:
            for kind, writer in self.writers.items():
                if isinstance(writer, VideoWriter):
                    writer.close(end)
                else:
                    writer.close({f"{kind}.json": _zip_description(kind, info, self.times)})
        except BaseException:
            self._abort()
            raise
        if "json" in self.targets:
            write_json(self.targets["json"], info)
        return VideoResult(outputs=dict(self.targets), info=info)

    def _metadata(self, backend, model_name, rate: float, end: float) -> dict:
        metric = self.metric
        chunked = self.predictions
        by_model = backend is not None or chunked is not None
        audio = None
        if self.info.has_audio:
            codec = self.info.audio_codec
            audio = {"codec": codec, "handling": "stream-copied" if codec in COPYABLE_AUDIO else "re-encoded as AAC"}
        limits_hit = []
        if self.options.max_frames is not None and len(self.times) >= self.options.max_frames:
            limits_hit.append("max_frames (option)")
        return {
            "generator": "image-to-3d", "kind": "video", "frames": len(self.times), "fps": rate, "duration_s": end,
            "frame_times_s": [round(t - self.times[0], 6) for t in self.times],
            "source": {**self.info.describe(), "start_s": self.times[0]},
            "camera": self.intrinsics.to_dict() if self.intrinsics else None,
            "axes": "right-handed, y up, camera at the origin looking down -z (OpenGL/glTF)",
            "units": "metres" if metric else "relative units",
            "model": model_name if by_model else None,
            "depth_source": model_name if by_model else "user depth video",
            "depth_kind": METRIC if metric else INVERSE_RELATIVE,
            "engine": backend.describe() if backend is not None else chunked.engine if chunked else None,
            "chunks": chunked.describe() if chunked else None,
            "stabilisation": {
                "enabled": self.options.stabilise,
                "method": "robust scale" + ("" if metric else " and shift") + " in inverse depth to a running "
                          "reference of the stabilised frames, reset at cuts (converter.video.stabilise)",
                "inlier_threshold_percent": 100 * THRESHOLD,
                "shots": 1 + max((fit["shot"] for fit in self.fits), default=0),
                "frames": self.fits,
            },
            "colour_conversion": self.conversions.get("colour"),
            "corrupt_packets_skipped": self.conversions.get("corrupt_packets", 0),
            "frames_resized_to_first_size": self.conversions.get("resized_frames", 0),
            "audio": audio,
            "subtitles": "dropped",
            "limits": asdict(self.limits),
            "limits_hit": limits_hit,
            "options": self.options.to_dict(),
            "outputs": {kind: path.name for kind, path in self.targets.items()},
            "timings_s": {"total": round(time.monotonic() - self.started, 3),
                          **{name: round(value, 3) for name, value in self.timings.items()}},
        }


def yield_to_the_forward() -> None:
    """Lower this thread's scheduling priority (Linux: each thread has its own nice value; elsewhere nothing).

    The decoder and the writer share the cores with the forward's threads, which wait for one another at every
    operation: a writer holding a core stalls the whole forward. Niced, they take the cores the forward leaves (its
    pauses, its single-threaded parts) and get their full share only when the queue to them is full. Nice 19 rather
    than 10: full SBS of DPT-SwinV2-Tiny at 1280 × 720 ran at a median 0.74 × the bare forward against 0.71 × (five
    paired runs, 19 ahead in each; the depth video alike; bench/RESULTS.md)."""
    if hasattr(os, "setpriority") and hasattr(threading, "get_native_id") and os.uname().sysname == "Linux":
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WRITER_NICENESS)


def predict_frames(backend, images: list[np.ndarray]) -> list[DepthMap]:
    """Depth of several frames; one forward for all of them when the engine is torch and their inputs match."""
    inner = getattr(backend, "backend", backend)  # a micro-batcher's wrapped back-end: frames are batched here
    if len(images) == 1 or getattr(inner, "engine", "") != "torch":
        return [inner.predict(image) for image in images]
    import torch

    prepared = [inner.prepare(image) for image in images]
    if len({tuple(values.shape) for values in prepared}) != 1:
        return [inner.predict(image) for image in images]
    outputs = inner.forward(torch.cat(prepared))
    return [inner.finish({name: value[i:i + 1] for name, value in outputs.items()}, image.shape[:2])
            for i, image in enumerate(images)]


def _poll(source: queue.Queue):
    try:
        return source.get_nowait()
    except queue.Empty:
        return None


def _zip_description(kind: str, info: dict, times: list[float]) -> dict:
    """What the per-frame files of a zip are, written into it (frame i is ``frame_<i>.png`` / ``.ply``)."""
    base = {"frames": len(times), "frame_times_s": info["frame_times_s"], "camera": info["camera"],
            "axes": info["axes"]}
    if kind == "depth16":
        values = ("metric depth in millimetres (0: none)" if info["units"] == "metres" else
                  "normalised nearness x 65535 (near is large; each shot's far and near planes are 0 and 65535; "
                  "0 also where there is no depth)")
        return {**base, "values": values}
    return {**base, "units": info["units"], "points_per_frame_at_most": info["options"]["ply_points"]}


@contextlib.contextmanager
def _as_file(source, limits: VideoLimits):
    """A path to read ``source`` from: a path as it is, bytes or a file copied into a temporary file (at most
    ``limits.max_bytes``; removed afterwards)."""
    if isinstance(source, (str, os.PathLike)):
        if not os.path.isfile(source):
            raise OptionError(f"The video '{os.fspath(source)}' does not exist or is not a file.")
        yield Path(source)
        return
    folder = tempfile.mkdtemp(prefix="image-to-3d-video-")
    try:
        path = Path(folder) / "source"
        written = 0
        with open(path, "wb") as handle:
            if isinstance(source, (bytes, bytearray, memoryview)):
                chunks = [bytes(source)]
            elif hasattr(source, "read"):
                chunks = iter(lambda: source.read(1 << 20), b"")
            else:
                raise TypeError(f"cannot read a video from {type(source).__name__}")
            for chunk in chunks:
                written += len(chunk)
                if written > limits.max_bytes:
                    raise VideoTooLargeError(f"The video is larger than {limits.max_bytes / 2**20:.0f} MB, the limit.")
                handle.write(chunk)
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)
