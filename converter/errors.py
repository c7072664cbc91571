"""Errors a person can act on.

Every failure the converter can foresee is one of these. ``str(error)`` is a sentence for people: it never holds a
traceback, a server path or a library's internal message, so the CLI and the web app can show it as it is.
``code`` is a stable machine-readable name for scripts and the JSON API.
"""


class ConversionError(Exception):
    """Base class: a conversion that cannot be done, with a message for people."""

    code = "conversion_failed"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InputError(ConversionError):
    """The input (image, depth map or option) is at fault; the caller can fix it."""

    code = "bad_input"


class UnsupportedImageError(InputError):
    code = "unsupported_format"


class DamagedImageError(InputError):
    code = "damaged_image"


class ImageTooLargeError(InputError):
    code = "image_too_large"


class ImageTooSmallError(InputError):
    """Fewer pixels a side than a depth map and a surface need."""

    code = "image_too_small"


class DepthFileError(InputError):
    code = "bad_depth_file"


class OptionError(InputError):
    code = "bad_option"


class ModelUnavailableError(ConversionError):
    """The depth model could not be loaded: not downloaded, wrong name, or broken files."""

    code = "model_unavailable"

    def __init__(self, model: str, reason: str, fix: str | None = None):
        """``fix``: what to do instead of the usual download advice (a missing package is not fixed by a download)."""
        self.model = model
        self.reason = reason
        super().__init__(
            f"The depth model '{model}' is unavailable: {reason} "
            + (fix or "To fix it, run once with internet access so the model is downloaded into the Hugging Face "
                      "cache (`make download-model` fetches the default one), or set DEPTH_MODEL (CLI: --model) to "
                      "a folder holding a downloaded model.")
        )


class OutputError(ConversionError):
    """The result could not be written (disk full, folder not writable)."""

    code = "output_failed"


class UnsupportedVideoError(InputError):
    """Not a video this converter reads (recognised from the content, not the name), or one without pictures."""

    code = "unsupported_video"


class DamagedVideoError(InputError):
    """A video whose pictures cannot be decoded: truncated, corrupt, or broken before its first frame."""

    code = "damaged_video"


class VideoTooLargeError(InputError):
    """A video beyond one of the limits (:class:`converter.video.VideoLimits`): size, length, frames, pixels or
    the time a video job may take."""

    code = "video_too_large"
