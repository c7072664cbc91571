"""The OpenVINO engine: the loaded transformers module converted once to OpenVINO and compiled for this CPU.

Conversion (``openvino.convert_model`` on the torch module, no ONNX file) takes seconds to tens of seconds, so the
converted model is saved beside the Hugging Face cache (``$OPENVINO_CACHE``, default ``$HF_HOME/openvino``), keyed
by the model id, a hash of its config and weight files, the input shape and the OpenVINO version; a second start
reads it back without loading the torch module at all. The saved model is float32 whatever the precision (one conversion serves fp32 and bf16); what differs by
precision is the compiled model, which OpenVINO's own cache (``compiled/``, keyed by it on the model, the precision
hint and its version) keeps, so a second start skips the compilation too.

Shapes are static, one converted model per input shape: the transformers models compute sizes in Python (Depth
Anything's head resizes to ``patch_height * patch_size``), so a trace with dynamic shapes bakes in the example's
size and silently gives the wrong output size for another aspect ratio. Fixed-size models (DPT-Hybrid, DPT-SwinV2)
have one shape; Depth Anything gets a small cache of compiled shapes. The torch module is loaded only to convert a
shape (or to run one that does not convert) and dropped right after: the weights stay in memory once, compiled. ``precision`` maps to OpenVINO's inference
precision on the CPU (fp32 → f32, bf16 → bf16; the weights stay float32 on disk). A model that does not convert
falls back to the torch forward with one log line, and says so (``engine`` becomes "torch", ``fallback`` the why).
The converted model returns every one of MODEL_OUTPUTS the torch module returns: Depth Pro's ``field_of_view`` too,
so its camera (``DepthMap.focal_px``) comes out of the shared post-processing exactly as with torch; Depth Pro's and
ZoeDepth's torch preprocessing and post-processing (:mod:`.depth_pro`, :mod:`.zoedepth`) run around it unchanged.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
import threading
import time
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ..errors import OptionError
from .backend import MODEL_OUTPUTS
from .huggingface import HuggingFaceDepthModel, _dtype, _load

log = logging.getLogger(__name__)

INFERENCE_PRECISION = {"fp32": "f32", "bf16": "bf16"}
MAX_SHAPES = 8  # compiled input shapes kept per model (Depth Anything: one per aspect ratio seen)
# New shapes converted per model and process: a conversion takes many seconds and about 100 MB of disk, and uploads
# choose their aspect ratio; beyond this, torch serves a shape that has no saved conversion.
MAX_CONVERSIONS = MAX_SHAPES
STATS = {"converted": 0, "loaded": 0}  # conversions run and saved conversions reused, in this process


def cache_folder() -> Path:
    """Where converted models are saved: $OPENVINO_CACHE, else beside the Hugging Face cache."""
    if os.environ.get("OPENVINO_CACHE"):
        return Path(os.environ["OPENVINO_CACHE"]).expanduser()
    try:
        from huggingface_hub import constants

        return Path(constants.HF_HOME) / "openvino"
    except (ImportError, AttributeError):
        return Path("~/.cache/huggingface/openvino").expanduser()


class OpenVinoDepthModel(HuggingFaceDepthModel):
    """A transformers depth model run by OpenVINO on the CPU (prepare and postprocess are the torch back-end's)."""

    engine = "openvino"

    def _weights_dtype(self):
        import torch

        if self.device != "cpu":
            raise OptionError("The OpenVINO engine runs on the CPU; use --device cpu, or --engine torch on a GPU.")
        if self.precision not in INFERENCE_PRECISION:
            raise OptionError(f"The OpenVINO engine runs in fp32 or bf16 on the CPU, not {self.precision}.")
        return torch.float32  # converted from float32; the precision is OpenVINO's inference precision

    def _load_network(self):
        """The config and a hash of the checkpoint's files; the torch module itself is loaded only when a shape
        has to be converted (or the model falls back), so a start with a saved conversion skips it."""
        from transformers import AutoConfig

        self._weights_dtype()  # an impossible device or precision is refused before anything loads
        config = _load(AutoConfig, self.model_id)
        self.model, self.parameters = None, 0
        self._config_json = config.to_json_string()
        self._weights_digest = _checkpoint_digest(self.model_id)
        if self._weights_digest is None:  # files we cannot find: hash the loaded weights instead
            self._weights_digest = _weights_digest(self._torch_module())
        return config

    def _torch_module(self):
        """The float32 torch module, loaded on first need."""
        if self.model is None:
            super()._load_network()
        return self.model

    def _after_load(self) -> None:
        """Convert (or read back) and compile the model for its usual input shape now, so a model that does not
        convert falls back at start rather than at the first job."""
        import openvino
        import torch
        from PIL import Image

        self.fallback = None
        self.dtype = torch.float32
        self._core = openvino.Core()
        self._core.set_property({"CACHE_DIR": str(cache_folder() / "compiled")})
        self._compiled: OrderedDict[tuple, tuple] = OrderedDict()
        self._ran: set[tuple] = set()  # shapes whose compiled model has run (repacked its weights) in this process
        self._convert_lock = threading.Lock()
        self._conversions = 0
        size = _processor_size(self.processor)
        try:
            self._compiled_for(tuple(self.prepare(Image.new("RGB", size[::-1], (128, 128, 128))).shape))
        except Exception as error:  # noqa: BLE001 - any failure to convert means: run it with torch
            self._fall_back(error)
            return
        self._drop_torch_module()

    def forward(self, pixel_values) -> dict:
        """pixel_values [B, 3, h, w] → {name: float32 tensor [B, ...]}, by the compiled model for that shape."""
        import torch

        if self.fallback is not None:
            return super().forward(pixel_values)
        if pixel_values.shape[0] > 1:  # a shared batch: one image at a time (a CPU gains nothing from batching,
            parts = [self.forward(one) for one in pixel_values.split(1)]  # and each batch size would convert anew)
            return {name: torch.cat([part[name] for part in parts]) for name in parts[0]}
        try:
            compiled, names = self._compiled_for(tuple(pixel_values.shape))
        except Exception as error:  # noqa: BLE001 - a shape that does not convert: torch serves it
            log.warning("OpenVINO could not convert %s for input %s (%s); torch runs that shape",
                        self.model_id, tuple(pixel_values.shape), type(error).__name__)
            return self._torch_forward(pixel_values)
        with self._lock:
            results = compiled(pixel_values.numpy())
            outputs = [np.array(results[index], dtype=np.float32) for index in range(len(names))]
            first_run = tuple(pixel_values.shape) not in self._ran
            self._ran.add(tuple(pixel_values.shape))
        if first_run:  # its weights are repacked now: the mapped file's pages are no longer read
            _release_mapped(cache_folder())
        return {name: torch.from_numpy(value) for name, value in zip(names, outputs)}

    def _torch_forward(self, pixel_values) -> dict:
        """A shape OpenVINO does not serve (rare: its conversion failed, or the process converted its share): the
        torch module is loaded for this forward and dropped after it, so no torch copy of the weights stays beside
        the compiled model (a second or two of loading, for the rare input)."""
        with self._convert_lock:  # no conversion drops the module under this forward
            self._torch_module()
            try:
                return super().forward(pixel_values)
            finally:
                self._drop_torch_module()

    def _drop_torch_module(self) -> None:
        """The weights are held once, by the compiled model: the torch module loaded to convert a shape goes as
        soon as that conversion is compiled (it is loaded again only to convert another)."""
        if self.model is not None:
            self.model = None
            gc.collect()
            _trim_heap()

    def _compiled_for(self, shape: tuple):
        """The compiled model for input ``shape`` and its output names: compiled before, saved on disk, or
        converted now (and saved)."""
        with self._convert_lock:
            if shape in self._compiled:
                self._compiled.move_to_end(shape)
                return self._compiled[shape]
            path = cache_folder() / f"{self._key(shape)}.xml"
            saved = self._saved(path)
            names, compiled = (saved["outputs"], None) if saved else (None, None)
            if saved:
                self.parameters = self.parameters or int(saved.get("parameters", 0))
                try:  # from the file: OpenVINO's compiled cache then skips compiling too
                    compiled = self._compile(str(path))
                    STATS["loaded"] += 1
                except RuntimeError:
                    log.warning("the saved OpenVINO conversion of %s is damaged; converting again", self.model_id)
            if compiled is None:
                if self._conversions >= MAX_CONVERSIONS:
                    raise ConversionBudgetSpent(f"{MAX_CONVERSIONS} shapes already converted in this process")
                self._conversions += 1
                model, names = self._convert(shape)
                compiled = self._compile(str(path) if self._save(model, names, path, shape) else model)
                del model
                self._drop_torch_module()
            _release_mapped(cache_folder())  # what compiling repacked is no longer read from the file
            self._ran.discard(shape)  # its first inference repacks the rest
            self._compiled[shape] = (compiled, names)
            while len(self._compiled) > MAX_SHAPES:
                self._compiled.popitem(last=False)
            return compiled, names

    def _compile(self, model):
        """Compile for this CPU with the process's threads, one stream (one forward at a time, all cores on it)."""
        started = time.perf_counter()
        compiled = self._core.compile_model(model, "CPU", {
            "INFERENCE_PRECISION_HINT": INFERENCE_PRECISION[self.precision], "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": "1", "INFERENCE_NUM_THREADS": str(_process_threads())})
        log.info("compiled %s for OpenVINO %s in %.1f s", self.model_id, self.precision, time.perf_counter() - started)
        return compiled

    @staticmethod
    def _saved(path: Path) -> dict | None:
        """What a saved conversion at ``path`` records (output names, parameters), or None when there is none (or
        it is unreadable)."""
        try:
            if path.is_file() and path.with_suffix(".bin").is_file():
                saved = json.loads(path.with_suffix(".json").read_text())
                return saved if isinstance(saved.get("outputs"), list) else None
        except (OSError, ValueError, AttributeError):
            pass
        return None

    def _save(self, model, names: list[str], path: Path, shape: tuple) -> bool:
        """Save a conversion for the next start (atomically: a half-written model is never read). False when the
        folder is not writable: that only costs the next start a conversion."""
        import openvino

        temporary = path.with_name(f"{path.stem}.{os.getpid()}.tmp.xml")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            openvino.save_model(model, str(temporary), compress_to_fp16=False)
            temporary.with_suffix(".bin").replace(path.with_suffix(".bin"))
            temporary.replace(path)
            path.with_suffix(".json").write_text(json.dumps({"model": self.model_id, "shape": list(shape),
                                                             "outputs": names, "parameters": self.parameters}))
            return True
        except OSError as error:
            log.warning("could not save the OpenVINO conversion of %s (%s)", self.model_id, error.strerror)
            return False

    def _convert(self, shape: tuple):
        """openvino.convert_model on the torch module, traced with an input of ``shape``."""
        import openvino
        import torch

        started = time.perf_counter()
        wrapper = _traceable(self._torch_module())
        # The tracer warns about every Python branch on a size: expected, since each shape is converted on its own.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = openvino.convert_model(wrapper, example_input=torch.zeros(shape))
        STATS["converted"] += 1
        log.info("converted %s to OpenVINO for input %s in %.1f s", self.model_id, shape, time.perf_counter() - started)
        return model, wrapper.names

    def _key(self, shape: tuple) -> str:
        """Model id, config, weights, input shape and OpenVINO version: a change to any converts again (the
        precision is the compiled cache's part of the key)."""
        import openvino

        text = json.dumps([self.model_id, self._config_json, self._weights_digest, list(shape),
                           openvino.__version__])
        slug = "".join(c if c.isalnum() else "-" for c in self.model_id.strip("/~."))[-48:]
        return f"{slug}-{hashlib.sha256(text.encode()).hexdigest()[:24]}"

    def _fall_back(self, error: Exception) -> None:
        self.fallback = f"the model did not convert to OpenVINO ({type(error).__name__})"
        log.warning("%s: %s; running it with torch", self.model_id, self.fallback)
        self.engine = "torch"
        self.dtype = _dtype(self.precision, self.device)  # torch runs it in the precision that was asked for
        self.model = self._torch_module().to(dtype=self.dtype)

    def describe(self) -> dict:
        info = super().describe()
        if self.fallback:
            info["fallback"] = self.fallback
        return info


def _trim_heap() -> None:
    """Give the freed heap back to the system (glibc's malloc_trim): the module's weights were many small blocks that
    free() keeps for reuse, so the process would stay as large as when it held them."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        pass


def _release_mapped(folder: Path) -> None:
    """Drop this process's resident pages of the files OpenVINO memory-mapped from ``folder`` (the saved conversion's
    ``.bin``, the compiled cache's blob), as ``madvise(MADV_DONTNEED)``. The CPU plugin copies every weight into its
    own repacked buffers while compiling and on a shape's first inference, and then reads the mapping no more
    (measured: 6 of 463 MB faulted back over later inferences), yet the pages it read stay counted in the process's
    RSS, a second copy of the weights. The mappings are read-only, so this loses nothing: a page read again is
    faulted back from the file (or the page cache)."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        madvise = libc.madvise
        madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        prefix = os.path.join(str(folder.resolve()), "")  # the folder's files, not a sibling that starts alike
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and "w" not in fields[1] and fields[5].strip().startswith(prefix):
                    start, end = (int(address, 16) for address in fields[0].split("-"))
                    madvise(start, end - start, 4)  # MADV_DONTNEED (Linux)
    except (OSError, AttributeError, ValueError):  # not Linux (no /proc, no madvise): the pages simply stay
        pass


class ConversionBudgetSpent(RuntimeError):
    """No more new shapes are converted in this process (see MAX_CONVERSIONS)."""


def _traceable(model):
    """The transformers module as a tracer wants it: a module that returns the tensors of MODEL_OUTPUTS it has, as
    a tuple, and remembers their names in ``.names`` (the converted model's outputs are positional)."""
    import torch

    class Outputs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            self.names: list[str] = []

        def forward(self, pixel_values):
            outputs = self.model(pixel_values=pixel_values)
            self.names[:] = [name for name in MODEL_OUTPUTS if getattr(outputs, name, None) is not None]
            return tuple(getattr(outputs, name) for name in self.names)

    return Outputs()


def _checkpoint_digest(model_id: str) -> str | None:
    """A hash of the checkpoint's weight files (names and bytes; a Hub model's from the local cache), or None when
    they cannot be found."""
    from .huggingface import _load_folder

    folder = _load_folder(model_id)
    files = sorted(path for path in folder.iterdir() if path.suffix in (".safetensors", ".bin")) if folder else []
    if not files:
        return None
    digest = hashlib.blake2b(digest_size=16)
    for path in files:
        digest.update(path.name.encode())
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 24):
                digest.update(chunk)
    return digest.hexdigest()


def _weights_digest(model) -> str:
    """A hash of every parameter and buffer (names, shapes and bytes): the same weights give the same key."""
    import torch

    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(tensor.detach().contiguous().view(-1).view(torch.uint8).numpy().data)
    return digest.hexdigest()


def _processor_size(processor) -> tuple[int, int]:
    """(height, width) the processor aims for (a picture of that size goes through it unchanged in shape)."""
    size = getattr(processor, "size", None)
    height = size.get("height") if isinstance(size, dict) else getattr(size, "height", None)
    width = size.get("width") if isinstance(size, dict) else getattr(size, "width", None)
    return (int(height), int(width)) if height and width else (384, 384)


def _process_threads() -> int:
    """The threads this process was given (TORCH_THREADS / set_torch_threads set torch's; OpenVINO uses as many)."""
    import torch

    return max(1, torch.get_num_threads())
