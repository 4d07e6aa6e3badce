"""The ``data`` section: where images come from (one source type per layout) and how they are decoded."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, field_validator, model_validator

from medclf.config._base import UserPath, _Section


# --------------------------------------------------------------------------------------------- data sources
class FolderSource(_Section):
    """A class-per-folder tree: ``root/<class>/<image>``."""

    type: Literal["folder"]
    path: UserPath


class SplitsSource(_Section):
    """A root with split folders, each holding class folders: ``root/<split>/<class>/<image>``."""

    type: Literal["splits"]
    path: UserPath
    train: list[str] = ["train"]  # folder names accepted for each split; the first that exists is used
    val: list[str] = ["val", "valid", "validation"]
    test: list[str] = ["test"]


class NpzSource(_Section):
    """A MedMNIST-style ``.npz`` with ``{train,val,test}_{images,labels}`` arrays."""

    type: Literal["npz"]
    path: UserPath
    class_names: list[str] | None = None  # names for label 0, 1, ...; default "0", "1", ...


class CsvSource(_Section):
    """A CSV manifest with one row per image; paths are relative to the CSV's folder."""

    type: Literal["csv"]
    path: UserPath
    path_column: str = "path"
    label_column: str = "label"
    split_column: str = "split"  # used when the CSV has it: values train, val or test
    patient_column: str = "patient_id"  # used when the CSV has it: images of one patient are grouped
    study_column: str = "study_id"  # used when the CSV has it: study-level evaluation
    fold_column: str = "fold"  # used when the CSV has it: the fold (0, 1, ...) whose held-out part holds the row
    multilabel: bool = False  # label_column holds several labels per image, joined by label_separator
    label_separator: str = "|"
    label_columns: list[str] | None = None  # multi-label as one 0/1 column per label (implies multilabel)
    # a manifest reads only files below its own folder, so a received CSV cannot point medclf at other files
    allow_outside_paths: bool = False


class FoldsSource(_Section):
    """Predefined folds: ``root/Fold<k>/{train,valid,test}/<class>/<image>``; CV uses exactly these folds."""

    type: Literal["folds"]
    path: UserPath


class PatientsSource(_Section):
    """A patient/study tree: ``root/<split>/<body part>/<patient>/<study>_<label>/<image>`` (MURA style)."""

    type: Literal["patients"]
    path: UserPath


class SyntheticSource(_Section):
    """The embedded generator of MRI-like head phantoms (see ``medclf.data.synthetic``)."""

    type: Literal["synthetic"]
    n_patients: int = Field(120, ge=4)
    slices_per_patient: int = Field(8, ge=1)
    image_size: int = Field(64, ge=32)
    seed: int = 0


Source = Annotated[
    Union[FolderSource, SplitsSource, NpzSource, CsvSource, SyntheticSource, FoldsSource, PatientsSource],
    Field(discriminator="type"),
]


class IntensityConfig(_Section):
    """How images deeper than 8 bits (16-bit PNG/TIFF, float TIFF, DICOM, NIfTI) are mapped to 0..255."""

    normalization: Literal["minmax", "percentile", "window"] = "minmax"
    percentiles: tuple[float, float] = (0.5, 99.5)  # percentile: clip to these percentiles, then min-max
    window: tuple[float, float] | None = None  # window: [center, width] in the image's (rescaled) units
    dicom_voi: bool = True  # DICOM: use the file's own window center/width or VOI LUT when it has one

    @model_validator(mode="after")
    def _consistent(self) -> IntensityConfig:
        lo, hi = self.percentiles
        if not 0 <= lo < hi <= 100:
            raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {list(self.percentiles)}")
        if self.normalization == "window" and (self.window is None or self.window[1] <= 0):
            raise ValueError("normalization 'window' needs window: [center, width] with a positive width")
        return self


class VolumeConfig(_Section):
    """Which 2-D slice of a 3-D volume (NIfTI) becomes the image."""

    axis: int = Field(2, ge=0, le=2)  # the axis sliced across (2: axial for RAS-oriented volumes)
    slice: Literal["middle"] | int = "middle"  # an index along the axis (negative counts from the end)


class DataConfig(_Section):
    source: Source
    image_size: int | tuple[int, int] = 64  # pixels; one number for square, or [height, width]
    channels: Literal[1, 3] = 1  # images are converted to grayscale (1) or RGB (3)
    resize: Literal["resize", "pad"] = "resize"  # pad: keep the aspect ratio, pad with black
    cache_dir: UserPath | None = None  # default: $MEDCLF_CACHE or ~/.cache/medclf
    # where a file source's decoded images live while training: ram (anonymous memory), mmap (the decode cache's
    # .npy mapped read-only: pages come from the page cache, so resident memory does not grow with the set), or
    # auto: mmap when the decoded set (N*C*H*W bytes) is larger than memory_share of physical RAM. Runtime keys.
    memory: Literal["auto", "ram", "mmap"] = "auto"
    memory_share: float = Field(0.5, gt=0, le=1)  # share of physical RAM above which `auto` maps from disk
    intensity: IntensityConfig = IntensityConfig()
    volume: VolumeConfig = VolumeConfig()
    on_bad_image: Literal["fail", "skip"] = "fail"  # skip: leave unreadable files out, listed in skipped.csv
    # where patient and study ids come from when the layout gives none: a DICOM tree's folders are often
    # series or dates, not patients, so by default the files' own PatientID and StudyInstanceUID are used
    patient_ids: Literal["header", "folder", "none"] = "header"
    # the class order (label index order) when given; default: sorted class names (npz: label order)
    classes: list[str] | None = None
    # a two-class task's positive class (sensitivity, PR curve, focal alpha, pos_weight, thresholds);
    # default: the second class of the order. The order always puts it second.
    positive_class: str | None = None

    @field_validator("classes", "positive_class", mode="before")
    @classmethod
    def _names_as_text(cls, v: object) -> object:
        # npz classes are named "0", "1"...: `-o data.positive_class=1` arrives as a number
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return str(v)
        if isinstance(v, list):
            return [str(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else x for x in v]
        return v

    @field_validator("classes")
    @classmethod
    def _distinct_classes(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            repeated = sorted({c for c in v if v.count(c) > 1})
            if repeated or len(v) < 2:
                raise ValueError(f"classes must list at least two distinct class names, got {v}"
                                 + (f" (repeated: {repeated})" if repeated else ""))
        return v

    @model_validator(mode="after")
    def _positive_is_second(self) -> DataConfig:
        if self.positive_class is not None and self.classes is not None:
            if self.positive_class not in self.classes:
                raise ValueError(f"positive_class {self.positive_class!r} is not one of classes {self.classes}")
            if len(self.classes) == 2 and self.classes.index(self.positive_class) != 1:
                raise ValueError(f"positive_class {self.positive_class!r} is listed first in classes {self.classes}; "
                                 "a two-class task's positive class is the second: list it second, or drop one of "
                                 "the two keys")
        return self

    @field_validator("image_size")
    @classmethod
    def _positive_size(cls, v: int | tuple[int, int]) -> int | tuple[int, int]:
        sizes = (v, v) if isinstance(v, int) else v
        if min(sizes) < 8:
            raise ValueError(f"image_size must be at least 8 pixels, got {v}")
        return v

    @property
    def size_hw(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return (self.image_size, self.image_size) if isinstance(self.image_size, int) else tuple(self.image_size)

