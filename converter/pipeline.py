"""The conversion: image → depth → camera → points, with per-stage timings."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from . import geometry, stages
from .align import Alignment
from .align import align as align_prediction
from .align import camera_model
from .depth import (
    INVERSE_RELATIVE,
    METRIC,
    DepthMap,
    check_engine,
    fit_depth_to_image,
    get_depth_model,
    is_model_loaded,
    load_depth_file,
)
from .depth.models import resolve_model_name
from .errors import OptionError
from .exports.outputs import OutputSettings, comment_lines, kind_for_path, write_outputs
from .images import (
    DEFAULT_MAX_PIXELS,
    LoadedImage,
    check_convertible_size,
    load_image,
    looks_like_drawing,
    remove_paper_background,
)
from .options import ConversionOptions
from .state import ConversionState, save_state
from .torch_kernels import values_at

AXES = "right-handed, y up, camera at the origin looking down -z (OpenGL/glTF)"
RELIEF_AXES = ("right-handed height field: x right, y up (image top = +y), z = height towards the viewer; "
               "the image spans x in [-0.5, 0.5], y in [-H/2W, H/2W]")
RELIEF_UNITS = "relative units"
UNITS = {METRIC: "metres", INVERSE_RELATIVE: "relative units"}


@dataclass
class ConversionResult:
    """A converted image.

    points [N, 3] float32 and colors [N, 3] uint8 (normals [N, 3] float32 if asked): one per kept pixel.
    depth [H, W] float32: depth along the optical axis at the image's size, in ``units``; 0 where there is none.
    grid_rows [Hg], grid_columns [Wg]: the image pixels sampled; keep [Hg, Wg]: which became points (row-major).
    """

    points: np.ndarray
    colors: np.ndarray
    normals: np.ndarray | None
    depth: np.ndarray
    prediction: DepthMap
    intrinsics: geometry.Intrinsics
    units: str
    options: ConversionOptions
    model: str | None
    grid_rows: np.ndarray
    grid_columns: np.ndarray
    keep: np.ndarray
    image: LoadedImage
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    looks_like_drawing: bool = False
    scale: dict | None = None  # set by a known length: the factor applied and the reference points
    alignment: Alignment | None = None  # set by align_to: the fit, both raw predictions, the disagreement map
    engine: dict | None = None  # what ran the model (engine, precision, device); None when no model ran
    depth_cached: bool = False  # every prediction came from a PredictionCache: no model ran
    input_image: LoadedImage | None = field(default=None, repr=False)  # before any paper was removed
    _relief_heights: np.ndarray | None = field(default=None, repr=False)

    @property
    def mode(self) -> str:
        return self.options.mode

    @property
    def axes(self) -> str:
        return RELIEF_AXES if self.mode == "relief" else AXES

    def grid_depth(self) -> np.ndarray:
        """[Hg, Wg] float32: the depth at the grid samples."""
        return self.depth[np.ix_(self.grid_rows, self.grid_columns)]

    def relief_heights(self) -> np.ndarray:
        """[Hg, Wg] float32 relief heights of the grid (see :func:`converter.geometry.relief_heights`), whatever the
        mode: relief mode's points use them, and so does every printable relief. Computed once."""
        if self._relief_heights is None:
            self._relief_heights = geometry.relief_heights(
                self.grid_depth(), self.keep, self.prediction.kind != METRIC, float(self.options.relief))
        return self._relief_heights

    def metadata(self) -> dict:
        """Everything needed to interpret the output files, JSON-serialisable: the one description of a result
        (the ``.json`` sidecar, the PLY/OBJ header comments and a web job's info are all made from it)."""
        info = {
            "generator": "image-to-3d",
            "mode": self.mode,
            "axes": self.axes,
            "units": self.units,
            "camera": {**self.intrinsics.to_dict(), **self._model_camera()},
            "model": self.model,
            "depth_source": self.model or "user depth map",
            "depth_kind": self.prediction.kind,
            "options": {name: _plain(value) for name, value in self.options.to_dict().items()},
            "image": {"width": self.image.width, "height": self.image.height, "scale": self.image.scale,
                      "has_alpha": self.image.alpha is not None},
            "grid": {"columns": int(len(self.grid_columns)), "rows": int(len(self.grid_rows))},
            "point_count": int(len(self.points)),
            "valid_fraction": float(np.mean(self.depth > 0)),
            "timings_s": {stage: round(float(seconds), 4) for stage, seconds in self.timings.items()},
            "notes": list(self.notes),
            "looks_like_drawing": bool(self.looks_like_drawing),
        }
        if self.scale is not None:
            info["scale"] = dict(self.scale)
        if self.alignment is not None:
            info["alignment"] = self.alignment.describe()
            info["depth_source"] = self.prediction.source
        if self.engine is not None:
            info["engine"] = dict(self.engine)
        if self.mode == "relief":
            info["relief"] = {"height": geometry.RELIEF_HEIGHT * float(self.options.relief),
                              "mapping": "z = RELIEF_HEIGHT * relief * t, t in [0, 1] normalised over the kept pixels "
                                         "(metric: linear in depth; relative models: linear in disparity)"}
        return info

    def _model_camera(self) -> dict:
        """The depth model's own estimate of the camera, when it made one (used or overridden by the user/EXIF)."""
        focal_px = self.prediction.focal_px
        if not focal_px:
            return {}
        fov = geometry.fov_from_focal(self.image.width, focal_px)
        return {"model_focal_px": float(focal_px), "model_fov_x_deg": fov,
                "depth_rescaled_for_focal": float(self.intrinsics.fx / focal_px) if self.prediction.kind == METRIC
                and self.intrinsics.fx != focal_px else 1.0}

    def describe(self) -> list[str]:
        """:meth:`metadata` as the lines written into PLY and OBJ headers."""
        return comment_lines(self.metadata())

    def to_open3d(self):
        """The cloud as an ``open3d.geometry.PointCloud`` (colours as floats in [0, 1], normals if computed)."""
        import open3d as o3d

        cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(self.points.astype(np.float64)))
        cloud.colors = o3d.utility.Vector3dVector(self.colors.astype(np.float64) / 255.0)
        if self.normals is not None:
            cloud.normals = o3d.utility.Vector3dVector(self.normals.astype(np.float64))
        return cloud

    def save(self, path: str | Path, mesh: bool = False, *, sidecar: bool = False, settings=None, **sizes) -> Path:
        """Write the result; the format follows the suffix (see :data:`converter.OUTPUTS`): ``.ply`` point cloud
        (or, with ``mesh=True``, a mesh PLY), ``.glb``, ``.obj`` (+ ``.mtl`` + texture), ``.stl`` relief, ``.json``
        sidecar, ``.npy`` / ``.depth.png`` depth. ``settings``: a :class:`converter.OutputSettings`, or its fields
        as keywords (``width_mm``, ``base_mm``, ``max_depth_ratio``). ``sidecar``: also write
        :meth:`metadata` as ``path.with_suffix(".json")``. Returns ``path``."""
        path = Path(path)
        settings = settings or OutputSettings.from_keywords(**sizes)
        kind = "mesh_ply" if mesh and path.suffix.lower() == ".ply" else kind_for_path(path).name
        targets = {kind: path}
        if sidecar:
            targets["json"] = path.with_suffix(".json")
        write_outputs(self, targets, settings)
        return path

    def state(self) -> ConversionState:
        """What reconverting this result needs (:meth:`Converter.reconvert`): the working image before any paper was
        removed, and the prediction (the aligned one, for an aligned conversion)."""
        return ConversionState(image=self.input_image or self.image, prediction=self.prediction)

    def save_state(self, folder: str | Path) -> list[Path]:
        """Keep :meth:`state` in ``folder`` (see :mod:`converter.state`); :func:`converter.load_state` reads it
        back. Returns the files written."""
        return save_state(self.state(), folder)


class Converter:
    """Image → coloured point cloud. Holds the depth model, which is loaded on first use and shared per process."""

    def __init__(
        self,
        model: str | None = None,
        device: str = "auto",
        precision: str = "fp32",
        max_pixels: int = DEFAULT_MAX_PIXELS,
        *,
        engine: str | None = None,
        on_device: bool | None = None,
        batch_size: int = 1,
        batch_wait_ms: float = 0.0,
        align_to: str | None = None,
    ):
        """``align_to``: a metric model (name, Hub id or folder) to which this converter's model is fitted in inverse
        depth (:mod:`converter.align`): metres with the first model's detail. ``on_device``: preprocessing and geometry
        as torch ops on the model's device, only the final arrays coming back (None: on CUDA only; the CPU keeps the
        exact PIL + numpy path). ``batch_size`` > 1: concurrent conversions in this process share forwards, waiting at
        most ``batch_wait_ms`` for each other. ``engine``: what runs the model (see
        :data:`converter.depth.ENGINE_CHOICES`; None = $ENGINE, else auto = OpenVINO on a CPU, torch on a GPU); an
        unknown one is an OptionError now, not at the first conversion."""
        self.model = resolve_model_name(model)
        self.device = device
        self.precision = precision
        self.engine = check_engine(engine)
        self.max_pixels = max_pixels
        self.on_device = on_device
        self.batch_size, self.batch_wait_ms = batch_size, batch_wait_ms
        self.align_to = resolve_model_name(align_to) if align_to and str(align_to).strip() else None

    @property
    def reference_model(self):
        """The metric model of ``align_to`` (loaded on first use, shared per process like any model)."""
        if self.align_to is None:
            return None
        return get_depth_model(self.align_to, self.device, self.precision, engine=self.engine)

    @property
    def depth_model(self):
        return get_depth_model(self.model, self.device, self.precision, **self._model_settings())

    @property
    def is_loaded(self) -> bool:
        return is_model_loaded(self.model, self.device, self.precision, **self._model_settings())

    def _model_settings(self) -> dict:
        return {"engine": self.engine, "tensor_preprocess": self.on_device, "batch_size": self.batch_size,
                "batch_wait_ms": self.batch_wait_ms}

    def runs_on_device(self, depth_model) -> bool:
        return self.on_device if self.on_device is not None else depth_model.device.startswith("cuda")

    def load(self) -> "Converter":
        """Load the model now (raises ModelUnavailableError) instead of on the first conversion."""
        self.depth_model  # noqa: B018 - loading is the point
        return self

    def convert(
        self,
        image,
        depth=None,
        *,
        options: ConversionOptions | None = None,
        prediction: DepthMap | None = None,
        reference: DepthMap | None = None,
        cache: PredictionCache | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> ConversionResult:
        """Convert ``image`` (path, bytes, file, PIL image, array, or an already decoded LoadedImage). ``depth``: a
        user depth map to use instead of the model (.npy or 16-bit PNG; path, bytes or file). ``prediction``: a
        DepthMap from an earlier conversion of the same image (``result.prediction``), to change the geometry
        without running the model again. ``reference``: the same for the ``align_to`` model's prediction (with
        ``align_to``, ``prediction`` is the unaligned one: ``result.alignment.relative``). ``cache``: predictions of
        this image kept between conversions (:class:`PredictionCache`). ``progress`` is called with each stage name
        of :mod:`converter.stages`. Which of these is used is decided by :meth:`run`."""
        return self.run(Sources(image=image, depth=depth, prediction=prediction, reference=reference, cache=cache),
                        options, progress=progress)

    def run(self, sources: Sources, options: ConversionOptions | None = None, *,
            progress: Callable[[str], None] | None = None) -> ConversionResult:
        """The one decision tree of a conversion: where the image and each prediction come from (see
        :class:`Sources`), whether the model is loaded and run, the alignment, and where the geometry runs (on the
        model's device when the prediction is still there, aligned or not; else on the host)."""
        opts = _checked(options)
        report = progress or (lambda stage: None)
        if sources.state is not None:  # a kept result: its image and (aligned) prediction, no model, no decoding
            return _state_geometry(sources.state, opts, report)
        timings: dict[str, float] = {}
        clock = _Clock(timings)
        aligning = self.align_to is not None
        if aligning and sources.depth is not None:
            raise OptionError("Aligning to a metric model fits a model's depth; it does not go with your own depth "
                              "map. Leave out one of them.")
        # Looked up before decoding, so that "loading model" comes first when the model must run.
        prediction, reference, cached = self._known_predictions(sources, aligning)
        runs_model = prediction is None and sources.depth is None
        if runs_model and not self.is_loaded:
            report(stages.LOADING_MODEL)

        report(stages.DECODING)
        with clock("decode"):
            # A JPEG is decoded at the smallest DCT scale that still gives the point grid (max_points=0: full size).
            loaded = load_image(sources.image, self.max_pixels,
                                draft_points=0 if sources.depth is not None else opts.max_points)
        check_convertible_size(loaded.width, loaded.height)
        notes: list[str] = []
        ran = None  # what ran the model, when it ran
        on_device = None  # the model's prediction while it is still on its device
        if prediction is not None:
            prediction = prediction.resized(loaded.width, loaded.height)
            model_name = _model_of(prediction)
        elif sources.depth is not None:
            with clock("depth_file"):
                prediction = load_depth_file(sources.depth, opts.depth_kind)
                prediction, note = fit_depth_to_image(prediction, loaded.width, loaded.height)
            if note:
                notes.append(note)
            model_name = None
        else:
            report(stages.ESTIMATING_DEPTH)
            depth_model = self.depth_model
            model_name = self.model
            with clock("model"):
                if self.runs_on_device(depth_model):
                    on_device = DevicePrediction.predict(depth_model, loaded, timings)
                else:
                    prediction = depth_model.predict(loaded.to_pil(), timings=timings)
            ran = depth_model.describe()

        alignment = None
        if aligning:
            if reference is None:
                report(stages.ESTIMATING_DEPTH)
                with clock("model_align_to"):
                    reference = self.reference_model.predict(loaded.to_pil())
            relative = prediction if on_device is None else on_device.to_host(loaded.width, loaded.height)
            with clock("align"):
                prediction, alignment = align_prediction(relative, reference.resized(loaded.width, loaded.height),
                                                         None if loaded.alpha is None else loaded.alpha > 0)
            if on_device is not None:  # the aligned map goes back to the device for its geometry
                on_device = DevicePrediction.of(prediction, on_device.native.device)

        report(stages.BUILDING_GEOMETRY)
        with clock("geometry"):
            if on_device is not None:
                result = build_point_cloud_on_device(loaded, on_device, opts, clock)
            else:
                result = build_point_cloud(loaded, prediction, opts, clock)
        result.alignment = alignment
        result.engine = ran
        result.model = model_name
        result.notes = notes
        result.timings = timings
        if cached is not None:
            cached.store(result)
            result.depth_cached = cached.complete
        return result

    def _known_predictions(self, sources: Sources, aligning: bool):
        """The predictions that need no model: those given, else the cache's (for the model, and with ``align_to``
        for the metric model). Returns (prediction, reference, the cache lookup or None)."""
        prediction, reference = sources.prediction, sources.reference if aligning else None
        if sources.cache is None or sources.depth is not None or prediction is not None:
            return prediction, reference, None
        lookup = _CacheLookup(sources.cache, self.precision, self.model, self.align_to if aligning else None)
        return lookup.prediction, reference if reference is not None else lookup.reference, lookup

    def convert_video(self, source, outputs, *, depth=None, options=None, limits=None, progress=None):
        """Convert a video (path, bytes or binary file) into 3D video outputs, streaming in bounded memory (see
        :mod:`converter.video`). ``outputs``: {kind: path}, or a path / list of paths whose endings name the kinds
        (``clip_LRF_Full_SBS.mp4``, ``clip.anaglyph.mp4``, … :data:`converter.video.VIDEO_OUTPUTS`). ``depth``: a
        depth video of your own instead of the model (``.npz`` stack or zip of 16-bit PNGs). ``options``: a
        :class:`converter.video.VideoOptions`; ``limits``: a :class:`converter.video.VideoLimits` (None: from the
        environment). ``progress(VideoProgress)`` after each frame. Returns a :class:`converter.video.VideoResult`."""
        from .video.pipeline import convert_video

        return convert_video(source, outputs, depth_model=None if depth is not None else (lambda: self.depth_model),
                             model_name=self.model, depth=depth, options=options, limits=limits, progress=progress)

    @staticmethod
    def reconvert(state: ConversionState, options: ConversionOptions | None = None, *,
                  progress: Callable[[str], None] | None = None) -> ConversionResult:
        """The geometry of a kept ``state`` (:func:`converter.load_state`, :meth:`ConversionResult.state`) made
        again with ``options``: no model is loaded or run, whatever this converter's model and ``align_to``."""
        return _state_geometry(state, _checked(options), progress or (lambda stage: None))


def _checked(options: ConversionOptions | None) -> ConversionOptions:
    opts = options if options is not None else ConversionOptions()
    if not isinstance(opts, ConversionOptions):
        raise TypeError("options must be a ConversionOptions (keyword options: converter.convert(...))")
    return opts


def _state_geometry(state: ConversionState, opts: ConversionOptions, report) -> ConversionResult:
    """A kept state's geometry made again: its image and (already aligned) prediction; no model, no decoding."""
    timings: dict[str, float] = {}
    report(stages.BUILDING_GEOMETRY)
    with _Clock(timings)("geometry"):
        result = build_point_cloud(state.image, state.prediction, opts, _Clock(timings))
    result.model = _model_of(state.prediction)
    result.timings = timings
    return result


@dataclass(frozen=True)
class Sources:
    """What a conversion may draw on; :meth:`Converter.run` decides what it uses, in this order:

    - ``state`` (a kept :class:`ConversionState`): its image and prediction, nothing decoded, no model;
    - else ``image`` (path, bytes, file, PIL image, array or LoadedImage), with its depth from ``prediction`` (a
      DepthMap of this image), else ``depth`` (a depth file of the user's), else ``cache``, else the model;
      with ``align_to``, the metric model's from ``reference``, else ``cache``, else that model.
    A new source of predictions is one more field here and one more branch in :meth:`Converter.run`."""

    image: object = None
    depth: object = None
    state: ConversionState | None = None
    prediction: DepthMap | None = None
    reference: DepthMap | None = None
    cache: PredictionCache | None = None


class PredictionCache(Protocol):
    """Model predictions of one image kept between conversions (the web's depth cache, bound to an upload): a
    conversion looks its models' predictions up here and stores those it had to make."""

    def get(self, model: str, precision: str) -> DepthMap | None: ...

    def put(self, model: str, precision: str, prediction: DepthMap) -> None: ...


class _CacheLookup:
    """What the cache held for a conversion, and the storing of what it lacked once the result is made."""

    def __init__(self, cache: PredictionCache, precision: str, model: str, reference_model: str | None):
        self.cache, self.precision = cache, precision
        self.model, self.reference_model = model, reference_model
        self.prediction = cache.get(model, precision)
        self.reference = None if reference_model is None else cache.get(reference_model, precision)

    @property
    def complete(self) -> bool:
        """Every prediction the conversion used came from the cache."""
        return self.prediction is not None and (self.reference_model is None or self.reference is not None)

    def store(self, result: ConversionResult) -> None:
        """Each model's own prediction (unaligned), for whichever the cache lacked."""
        alignment = result.alignment
        if self.prediction is None:
            self.cache.put(self.model, self.precision, result.prediction if alignment is None else alignment.relative)
        if self.reference_model is not None and self.reference is None and alignment is not None:
            self.cache.put(self.reference_model, self.precision, alignment.reference)


@dataclass(frozen=True)
class DevicePrediction:
    """A prediction still on the model's device (CUDA): native [h, w] and, when the model's own post-processing
    made it (Depth Pro's camera) or an alignment did, values [H, W]; else values are the bicubic resize of native."""

    native: object
    values: object | None
    kind: str
    source: str
    focal_px: float | None = None

    @classmethod
    def predict(cls, depth_model, loaded: LoadedImage, timings: dict | None = None) -> "DevicePrediction":
        camera: dict = {}
        native, values = depth_model.predict_on_device(loaded.rgb, timings=timings, camera=camera)
        focal_px = camera.get("focal_px")  # Depth Pro: its values are its own post-processing's
        return cls(native=native, values=values if focal_px else None, kind=depth_model.kind,
                   source=depth_model.model_id, focal_px=focal_px)

    @classmethod
    def of(cls, prediction: DepthMap, device) -> "DevicePrediction":
        """A host prediction moved to ``device`` (an aligned one: its values are not a resize of its native)."""
        import torch

        return cls(native=torch.from_numpy(np.ascontiguousarray(prediction.native)).to(device),
                   values=torch.from_numpy(np.ascontiguousarray(prediction.values)).to(device),
                   kind=prediction.kind, source=prediction.source, focal_px=prediction.focal_px)

    def to_host(self, width: int, height: int) -> DepthMap:
        import torch

        with torch.inference_mode():
            native = self.native.float()
            values = values_at(native, height, width) if self.values is None else self.values.float()
            return DepthMap(values=geometry.to_host(values), native=geometry.to_host(native), kind=self.kind,
                            source=self.source, focal_px=self.focal_px)


def _model_of(prediction: DepthMap) -> str | None:
    """The model a prediction came from (None for the user's own depth)."""
    return None if prediction.source == "user" else prediction.source


def _image_camera_grid(loaded: LoadedImage, opts: ConversionOptions, clock, model_focal_px: float | None = None,
                       model_name: str | None = None):
    """What stays on the CPU whatever the device: drawing detection, paper removal, the camera and the grid.
    ``model_focal_px``: the depth model's own focal length at the working size (used after the user's and EXIF's)."""
    drawing = looks_like_drawing(loaded)
    if opts.paper_background:
        with clock("paper_background"):
            loaded = remove_paper_background(loaded)
    width, height = loaded.width, loaded.height
    focal_px, principal_point = opts.focal_px, opts.principal_point
    if loaded.scale != 1.0:  # a draft-decoded JPEG: the user's pixels are the file's; ours are the working size's
        focal_px = None if focal_px is None else focal_px * loaded.scale
        if principal_point is not None:
            principal_point = tuple(working_pixel(value, loaded.scale) for value in principal_point)
    intrinsics = geometry.make_intrinsics(
        width, height, fov_deg=opts.fov_deg, focal_px=focal_px, principal_point=principal_point,
        exif_focal_px=loaded.focal_px, exif_source=loaded.focal_source, model_focal_px=model_focal_px,
        model_name=model_name,
    )
    columns, rows = geometry.pixel_grid(width, height, opts.max_points)
    return loaded, drawing, intrinsics, columns, rows


def build_point_cloud_on_device(loaded: LoadedImage, predicted: DevicePrediction, opts: ConversionOptions,
                                clock=None) -> ConversionResult:
    """:func:`build_point_cloud` for a prediction that is on its device (CUDA): the same geometry
    (:func:`converter.geometry.grid_cloud`) runs there on torch; only the final arrays come back."""
    import torch

    clock = clock or _Clock({})
    given = loaded
    loaded, drawing, intrinsics, columns, rows = _image_camera_grid(
        loaded, opts, clock, predicted.focal_px, camera_model(predicted.source))
    device = predicted.native.device
    with clock("device_geometry"), torch.inference_mode():
        rgb = torch.from_numpy(loaded.rgb).to(device, non_blocking=True)
        alpha = None if loaded.alpha is None else torch.from_numpy(loaded.alpha).to(device, non_blocking=True)
        native = predicted.native.float()
        values = values_at(native, loaded.height, loaded.width) if predicted.values is None \
            else predicted.values.float()
        cloud = geometry.grid_cloud(rgb, alpha, values, native, metric=predicted.kind == METRIC, user_depth=False,
                                    options=opts, intrinsics=intrinsics, columns=columns, rows=rows,
                                    focal_px=predicted.focal_px).to_host()
        prediction = DepthMap(values=geometry.to_host(values), native=geometry.to_host(native), kind=predicted.kind,
                              source=predicted.source, focal_px=predicted.focal_px)
    return _result(cloud, prediction, given, loaded, drawing, intrinsics, columns, rows, opts)


def build_point_cloud(loaded: LoadedImage, prediction: DepthMap, opts: ConversionOptions, clock=None) -> ConversionResult:
    """The geometry half of a conversion, without the model: depth units, camera, sampling, cleaning, points
    (:func:`converter.geometry.grid_cloud` on numpy arrays)."""
    clock = clock or _Clock({})
    given = loaded
    loaded, drawing, intrinsics, columns, rows = _image_camera_grid(
        loaded, opts, clock, prediction.focal_px, camera_model(prediction.source))
    cloud = geometry.grid_cloud(loaded.rgb, loaded.alpha, prediction.values, prediction.native,
                                metric=prediction.kind == METRIC, user_depth=prediction.source == "user",
                                options=opts, intrinsics=intrinsics, columns=columns, rows=rows,
                                focal_px=prediction.focal_px, clock=clock)
    return _result(cloud, prediction, given, loaded, drawing, intrinsics, columns, rows, opts)


def _result(cloud: geometry.GridCloud, prediction: DepthMap, given: LoadedImage, loaded: LoadedImage, drawing: bool,
            intrinsics: geometry.Intrinsics, columns: np.ndarray, rows: np.ndarray,
            opts: ConversionOptions) -> ConversionResult:
    """A ConversionResult of a host cloud (scaled to a known length when asked)."""
    result = ConversionResult(
        points=cloud.points, colors=cloud.colors, normals=cloud.normals, depth=cloud.depth, prediction=prediction,
        intrinsics=intrinsics, units=RELIEF_UNITS if opts.mode == "relief" else UNITS[prediction.kind],
        options=opts, model=None, grid_rows=rows, grid_columns=columns, keep=cloud.keep, image=loaded,
        looks_like_drawing=drawing, input_image=given, _relief_heights=cloud.heights,
    )
    if opts.known_length is not None:
        apply_known_length(result, opts.known_length)
    return result


def apply_known_length(result: ConversionResult, known_length) -> None:
    """Scale ``result`` (points and depth) so that the surface points under two pixels lie ``metres`` apart.

    known_length: (x1, y1, x2, y2, metres), pixels in the file's coordinates (converted to the working image's like
    --principal-point). The 3D point of a pixel is the back-projection of the depth at that pixel (perspective), or
    its place on the height field (relief); a pixel with no depth there is an OptionError. Units become metres.
    """
    x1, y1, x2, y2, metres = known_length
    ends = [_surface_point(result, x, y) for x, y in ((x1, y1), (x2, y2))]
    distance = float(np.linalg.norm(ends[1] - ends[0]))
    if not distance > 0:
        raise OptionError("The two pixels of the known length are at the same place in 3D; pick two points apart.")
    factor = metres / distance
    result.points = (result.points * np.float32(factor)).astype(np.float32)
    result.depth = (result.depth * np.float32(factor)).astype(np.float32)
    result.units = "metres"
    result.scale = {
        "factor": factor, "known_length_m": metres, "pixels": [[x1, y1], [x2, y2]],
        "points": [[float(v) * factor for v in end] for end in ends],
        "description": f"scaled x{factor:.6g} so that pixels ({x1:g}, {y1:g}) and ({x2:g}, {y2:g}) are {metres:g} m "
                       "apart",
    }


def working_pixel(file_pixel: float, scale: float) -> float:
    """A pixel coordinate of the file (the user's) in the working image decoded at ``scale``: centres map to
    centres."""
    return (file_pixel + 0.5) * scale - 0.5


def _surface_point(result: ConversionResult, x: float, y: float) -> np.ndarray:
    """[3] float64: the unscaled 3D point of the surface under file pixel (x, y)."""
    scale = result.image.scale
    u, v = working_pixel(x, scale), working_pixel(y, scale)
    width, height = result.image.width, result.image.height
    if not (-0.5 <= u < width - 0.5 and -0.5 <= v < height - 0.5):
        raise OptionError(f"The known length's pixel ({x:g}, {y:g}) lies outside the image.")
    if result.mode == "relief":
        row = int(np.argmin(np.abs(result.grid_rows - v)))
        column = int(np.argmin(np.abs(result.grid_columns - u)))
        if not result.keep[row, column]:
            raise OptionError(f"There is no surface at the known length's pixel ({x:g}, {y:g}): pick points on the "
                              "object.")
        px, py = geometry.relief_grid(width, height, np.array([u]), np.array([v]))
        return np.array([px[0], py[0], float(result.relief_heights()[row, column])])
    row, column = int(round(v)), int(round(u))
    alpha = result.image.alpha
    if alpha is not None and alpha[row, column] == 0:  # no surface there: the cloud has no point at a clear pixel
        raise OptionError(f"There is no surface at the known length's pixel ({x:g}, {y:g}): it is transparent; "
                          "pick points on the object.")
    z = float(result.depth[row, column])
    if not (np.isfinite(z) and z > 0):
        raise OptionError(f"There is no depth at the known length's pixel ({x:g}, {y:g}): pick points on the object.")
    k = result.intrinsics
    return np.array([(u - k.cx) * z / k.fx, -(v - k.cy) * z / k.fy, -z])


def _plain(value):
    """JSON-friendly option values (tuples become lists)."""
    return list(value) if isinstance(value, tuple) else value


class _Clock:
    """Adds the wall time of each ``with clock(stage):`` block to ``timings[stage]`` (seconds)."""

    def __init__(self, timings: dict[str, float]):
        self.timings = timings

    def __call__(self, stage: str):
        return _Stage(self.timings, stage)


class _Stage:
    def __init__(self, timings, stage):
        self.timings, self.stage = timings, stage

    def __enter__(self):
        self.started = time.perf_counter()

    def __exit__(self, *exc):
        self.timings[self.stage] = self.timings.get(self.stage, 0.0) + time.perf_counter() - self.started
        return False
