"""Model cards: ``models/<name>/model.toml`` says what a model needs and what its outputs mean.

The card is the only model-specific thing: the runtime, the pre/post-processing and the encoders read
it, so a new model is a new folder, not new code. Loading checks the ONNX file's sha256 against the card
and refuses a mismatch.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from node.analyse.types import Priority
from node.errors import ChecksumError, ConfigError
from node.paths import default_models_dir
from node.validation import format_validation_error

_STRICT = ConfigDict(frozen=True, extra="forbid")


class Code(BaseModel):
    """A coded concept: (scheme designator, code value, code meaning), e.g. ("SCT", "39607008", "Lung")."""

    model_config = _STRICT
    scheme: str = Field(min_length=1, max_length=16)
    value: str = Field(min_length=1, max_length=64)
    meaning: str = Field(min_length=1, max_length=64)


class ModelInfo(BaseModel):
    model_config = _STRICT
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    version: str = Field(min_length=1, max_length=64)
    description: str
    manufacturer: str = Field(min_length=1, max_length=64)
    intended_use: str
    limitations: str = ""
    file: str = "model.onnx"
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class Accepts(BaseModel):
    """Which series the model may be run on; a series outside these is skipped with the reason."""

    model_config = _STRICT
    modality: tuple[str, ...] = ("CT",)
    # Body Part Examined values accepted; an empty tuple accepts any, "" accepts a missing value.
    body_part: tuple[str, ...] = ()
    slice_thickness_mm: tuple[float, float] = (0.0, 100.0)
    min_slices: int = Field(default=1, ge=1)


class Window(BaseModel):
    """Linear map of [center - width/2, center + width/2] to [0, 1], clipped."""

    model_config = _STRICT
    center: float
    width: Annotated[float, Field(gt=0)]


class InputSpec(BaseModel):
    """What the network is fed. Images: ``kind`` "2d" or "3d" with size, spacing and window. Waveforms
    (ECG): ``kind = "waveform"`` with leads, sampling rate and window length (node/analyse/ecg/rhythm.py)."""

    model_config = _STRICT
    kind: Literal["2d", "3d", "waveform"] = "2d"
    # 2d: (rows, columns) the network sees; 3d: (slices, rows, columns) of one sliding-window patch.
    size: tuple[int, ...] = Field(default=(), max_length=3)
    # Target spacing in mm: 2d (row, column); 3d (slice, row, column).
    spacing_mm: tuple[float, ...] = Field(default=(), max_length=3)
    # Required for images (checked below); the default only keeps the type simple for waveforms.
    window: Window = Window(center=0.0, width=1.0)
    # Waveforms: the leads fed in this order, the rate every lead is resampled to, the recording's
    # rate below which it is refused, the seconds the network sees, and whether two channels of the
    # detected beats (positions and instantaneous rate) follow the leads.
    leads: tuple[str, ...] = ()
    sampling_rate_hz: float = Field(default=0.0, ge=0)
    min_sampling_rate_hz: float = Field(default=0.0, ge=0)
    window_s: float = Field(default=0.0, ge=0)
    beat_channel: bool = False
    denoise: Literal["none", "gaussian", "bilateral"] = "none"
    denoise_sigma: float = Field(default=0.8, gt=0)
    clahe: bool = False
    clahe_clip: float = Field(default=2.0, gt=0)
    # 2d only ("2.5-D"): also feed the slices this many steps above and below as extra channels, each
    # step context_spacing_mm along the slice normal (interpolated), so the network can tell a vessel
    # running through the slice (it continues) from a nodule (it ends). Channels = 1 + 2 * context_slices.
    context_slices: int = Field(default=0, ge=0, le=8)
    context_spacing_mm: float = Field(default=2.0, gt=0)
    # 3d only: fraction of a patch that neighbouring sliding-window patches overlap.
    overlap: float = Field(default=0.5, ge=0, lt=1)
    batch_size: int = Field(default=8, ge=1)

    @model_validator(mode="after")
    def _dims_match(self) -> InputSpec:
        if self.kind == "waveform":
            if not self.leads or self.sampling_rate_hz <= 0 or self.window_s <= 0:
                raise ValueError("input kind 'waveform' needs leads, sampling_rate_hz > 0 and window_s > 0")
            if self.size or self.spacing_mm or "window" in self.model_fields_set:
                raise ValueError("input.size, input.spacing_mm and input.window are for images, not waveforms")
            return self
        if self.leads or self.window_s or self.sampling_rate_hz or self.beat_channel:
            raise ValueError("input.leads, sampling_rate_hz, window_s and beat_channel are for kind 'waveform'")
        if "window" not in self.model_fields_set:
            raise ValueError("input.window: required for image models (center and width)")
        dims = 2 if self.kind == "2d" else 3
        if len(self.size) != dims or len(self.spacing_mm) != dims:
            raise ValueError(f"input.size and input.spacing_mm need {dims} numbers for kind = '{self.kind}'")
        if self.kind == "3d" and self.context_slices:
            raise ValueError("input.context_slices is for 2d models; a 3d model sees its neighbours already")
        return self

    @property
    def channels(self) -> int:
        if self.kind == "waveform":  # the beats: their positions and the instantaneous rate (ecg/rhythm.py)
            return len(self.leads) + 2 * int(self.beat_channel)
        return 1 + 2 * self.context_slices


class OutputSpec(BaseModel):
    model_config = _STRICT
    # softmax: one channel per class (0 = background); sigmoid: one channel per label.
    activation: Literal["softmax", "sigmoid"] = "softmax"
    # Probabilities are resized back to the source grid with this interpolation before the argmax.
    resize_back: Literal["linear", "nearest"] = "linear"


class Label(BaseModel):
    """One output class, its coded meaning (SEG segment) and its post-processing."""

    model_config = _STRICT
    index: int = Field(ge=1, le=255)
    name: str = Field(min_length=1, max_length=64)
    category: Code
    type: Code
    colour: tuple[int, int, int] = (255, 0, 0)
    # Report each connected component as a finding (measurement group in the SR).
    findings: bool = False
    # Post-processing: opening/closing radius in mm (0 = off), hole filling, component size floors.
    opening_mm: float = Field(default=0.0, ge=0)
    closing_mm: float = Field(default=0.0, ge=0)
    fill_holes: bool = False
    min_volume_mm3: float = Field(default=0.0, ge=0)
    min_diameter_mm: float = Field(default=0.0, ge=0)
    # Operating point: give the label wherever its probability reaches this (0 = plain argmax). Below
    # one half it trades false positives for sensitivity; the component filters below then clean up.
    threshold: float = Field(default=0.0, ge=0, le=1)
    # Drop components whose longest principal axis exceeds this many times their shortest (0 = off):
    # a blob is kept, a tube (a vessel taken for a nodule) is not.
    max_elongation: float = Field(default=0.0, ge=0)
    keep_largest: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _colour_range(self) -> Label:
        if any(not 0 <= c <= 255 for c in self.colour):
            raise ValueError("colour: three integers 0..255 (R, G, B)")
        return self


class Outputs(BaseModel):
    model_config = _STRICT
    seg: bool = True
    sr: bool = True
    sc: bool = False


class Anatomy(BaseModel):
    """Where the model looks: stated in every SEG (Frame Anatomy: region and laterality).

    ``laterality``: R (right), L (left), B (both sides of a paired structure) or U (unpaired, e.g. the
    thorax as a whole).
    """

    model_config = _STRICT
    region: Code
    laterality: Literal["R", "L", "B", "U"] = "U"


class TriageRule(BaseModel):
    """If a finding of ``label`` reaches ``min_diameter_mm`` (and ``min_volume_mm3``), suggest ``priority``.

    Waveform models classify a whole recording: the rule fires when ``label`` is the rhythm found and the
    heart rate is above ``heart_rate_above_bpm`` or below ``heart_rate_below_bpm`` (when given).
    """

    model_config = _STRICT
    label: str
    min_diameter_mm: float = Field(default=0.0, ge=0)
    min_volume_mm3: float = Field(default=0.0, ge=0)
    heart_rate_above_bpm: float | None = Field(default=None, ge=0)
    heart_rate_below_bpm: float | None = Field(default=None, ge=0)
    priority: Priority


class Triage(BaseModel):
    model_config = _STRICT
    default: Priority = Priority.ROUTINE
    rules: tuple[TriageRule, ...] = ()


class ModelCard(BaseModel):
    """A parsed ``model.toml``. ``directory`` is where the card was read from (set by :func:`load_card`)."""

    model_config = _STRICT
    model: ModelInfo
    accepts: Accepts = Accepts()
    input: InputSpec
    output: OutputSpec = OutputSpec()
    labels: tuple[Label, ...] = Field(min_length=1)
    outputs: Outputs = Outputs()
    anatomy: Anatomy | None = None
    triage: Triage = Triage()
    # Written by the training script and by `models evaluate --write-card`: how it was made, how it does.
    training: dict[str, float | int | str] = Field(default_factory=dict)
    evaluation: dict[str, float | int | str] = Field(default_factory=dict)
    directory: Path | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ModelCard:
        indices = [label.index for label in self.labels]
        if len(set(indices)) != len(indices):
            raise ValueError("labels: each label index must be used once")
        names = {label.name for label in self.labels}
        for rule in self.triage.rules:
            if rule.label not in names:
                raise ValueError(f"triage.rules: label '{rule.label}' is not one of {sorted(names)}")
        if self.outputs.seg and self.anatomy is None:
            raise ValueError(
                "anatomy: required when outputs.seg = true (every SEG states its anatomic region), e.g. "
                '[anatomy] region = { scheme = "SCT", value = "51185008", meaning = "Thorax" } and laterality = "U"'
            )
        return self

    @property
    def onnx_path(self) -> Path:
        base = self.directory if self.directory is not None else Path(".")
        return base / self.model.file

    def label(self, index: int) -> Label:
        for label in self.labels:
            if label.index == index:
                return label
        raise KeyError(index)


def parse_card(text: str, source: str = "model.toml", directory: Path | None = None) -> ModelCard:
    """Parse and validate card text; raise :class:`ConfigError` naming every bad key."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from exc
    try:
        return ModelCard.model_validate({**data, "directory": directory})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(source, exc)) from exc


def replace_table(text: str, table: str, body: str) -> str:
    """Card text with ``[table]`` replaced by ``body`` (a whole table, header included), or appended.

    Used by the training script and ``models evaluate --write-card``: the rest of the card, comments
    included, stays as the author wrote it.
    """
    # The table runs from its header to the next header: lines not starting with "[", or blank ones.
    pattern = re.compile(rf"^\[{re.escape(table)}\]\n(?:[^\[\n].*\n?|\n)*", flags=re.M)
    block = body.rstrip("\n") + "\n"
    if pattern.search(text):
        replaced = pattern.sub(lambda _: block + "\n", text, count=1)
    else:
        replaced = text.rstrip("\n") + "\n\n" + block
    return replaced.rstrip("\n") + "\n"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_card(directory: Path, verify: bool = True) -> ModelCard:
    """Read ``directory/model.toml``; with ``verify``, check the ONNX file exists and matches sha256."""
    card_path = directory / "model.toml"
    if not card_path.is_file():
        raise ConfigError(f"{card_path}: no model card here (each model folder needs a model.toml)")
    card = parse_card(card_path.read_text(encoding="utf-8"), str(card_path), directory)
    if verify:
        verify_checksum(card)
    return card


def verify_checksum(card: ModelCard) -> None:
    path = card.onnx_path
    if not path.is_file():
        raise ChecksumError(f"{path}: model file named by model.file in the card is missing")
    actual = sha256_of(path)
    if actual != card.model.sha256:
        raise ChecksumError(
            f"{path}: sha256 is {actual} but the card says {card.model.sha256}; the model file was changed "
            "or replaced. Refusing to load it: restore the file, or update model.sha256 after re-evaluating it."
        )


def find_card(name: str, models_dir: Path | None = None, verify: bool = True) -> ModelCard:
    base = models_dir if models_dir is not None else default_models_dir()
    directory = base / name
    if not directory.is_dir():
        known = sorted(p.name for p in base.iterdir() if (p / "model.toml").is_file()) if base.is_dir() else []
        raise ConfigError(f"model '{name}' not found in {base}; known models: {', '.join(known) or 'none'}")
    return load_card(directory, verify=verify)
