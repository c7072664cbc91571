"""What a web job is asked to do, as one typed object: parsed once from the form or API, stored with the job, read
back whole by whoever runs it (a thread of this process or a Celery worker on another machine)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from converter import ConversionOptions, OutputSettings

DEFAULT_STL_WIDTH_MM = OutputSettings().stl_width_mm
DEFAULT_SIMPLIFY = OutputSettings().simplify
DEFAULT_UP = OutputSettings().up


@dataclass(frozen=True)
class JobRequest:
    """options: the conversion. model: the depth model (Hub id or folder). mesh: offer the mesh downloads.
    stl_width_mm: width of the printable relief. simplify: detail level or triangle count of the simplified mesh.
    up: which axis is up in the PLY and PCD files ("y" or "z"; converter.service_api.UP_AXES). rebuild_of: the job
    whose image and depth a rebuild reuses (no model run). align_to: a metric model that ``model``'s depth is fitted
    to ("" = none; see converter.align). video: set for a video (web.jobs.video): its converter.video.VideoOptions
    as a dict and the output kinds; ``options`` then holds only the model's share (none)."""

    options: ConversionOptions = field(default_factory=ConversionOptions)
    model: str = ""
    mesh: bool = True
    stl_width_mm: float = DEFAULT_STL_WIDTH_MM
    simplify: str | int = DEFAULT_SIMPLIFY
    up: str = DEFAULT_UP
    rebuild_of: str | None = None
    align_to: str = ""
    video: dict = field(default_factory=dict)  # a video job: {"options": VideoOptions fields, "outputs": [kinds]}

    def __post_init__(self):
        settings = self.output_settings  # the same checks as every other way in
        object.__setattr__(self, "simplify", settings.simplify)
        object.__setattr__(self, "up", settings.up)

    @property
    def output_settings(self) -> OutputSettings:
        return OutputSettings(stl_width_mm=self.stl_width_mm, simplify=self.simplify, up=self.up)

    @property
    def is_video(self) -> bool:
        return bool(self.video)

    def public(self) -> dict:
        """As people see it (result.json, the API, the rebuild form): the options plus the job's own choices."""
        if self.video:
            return {**self.video["options"], "model": self.model, "outputs": list(self.video["outputs"])}
        return {**_plain(self.options.to_dict()), "model": self.model, "mesh": self.mesh,
                "stl_width_mm": self.stl_width_mm, "simplify": self.simplify, "up": self.up,
                "align_to": self.align_to or None}

    def to_dict(self) -> dict:
        data = asdict(self)
        data["options"] = _plain(self.options.to_dict())
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "JobRequest":
        data = dict(data)
        options = dict(data.pop("options", {}))
        for name in ("principal_point", "known_length"):
            if options.get(name) is not None:
                options[name] = tuple(options[name])
        return cls(options=ConversionOptions(**options), **data)

    def with_changes(self, **changes) -> "JobRequest":
        return replace(self, **changes)


def _plain(values: dict) -> dict:
    return {name: list(value) if isinstance(value, tuple) else value for name, value in values.items()}
