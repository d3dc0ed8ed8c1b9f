"""Volumes to 2D slices along the source's axis: lesion slices plus a few context slices."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medtrinity_tasks.errors import InputRejected
from medtrinity_tasks.preprocess.images import encode_png, fit_within, window_to_uint8
from medtrinity_tasks.records import record_id
from medtrinity_tasks.sources.catalog import SourceEntry
from medtrinity_tasks.sources.readers import reader_for
from medtrinity_tasks.sources.readers.base import Volume
from medtrinity_tasks.sources.readers.limits import InputLimits, listed
from medtrinity_tasks.stages.base import InputStage

AXES = {"axial": (2, ["L", "P"]), "coronal": (1, ["L", "I"]), "sagittal": (0, ["P", "I"])}
"""Per slicing axis: the RAS+ array axis it cuts, and the patient direction of +column and +row in
the displayed slice (DICOM Patient Orientation). Axial and coronal slices are in radiological view
(image left is patient right); sagittal slices face the patient's left (anterior on the left)."""


def display_view(ras_slice: np.ndarray) -> np.ndarray:
    """A RAS+ slice, its two remaining axes in RAS order, as an image indexed [row, column]: the
    first axis runs right to left across columns, the second runs down the rows from its high end
    (anterior or superior at the top)."""
    return ras_slice[::-1, ::-1].T


def plane(volume: np.ndarray, along: int, index: int) -> np.ndarray:
    """The 2D plane at ``index`` along axis ``along``, as a view (np.take copies, and slowly)."""
    return volume[(slice(None),) * along + (index,)]


def label_values(labels: np.ndarray) -> set[int]:
    """The values a label map holds besides background. bincount counts quickly but allocates a counter for every
    value up to the largest, so a map holding a large value (a broken or hostile file) is counted by sorting."""
    if np.can_cast(labels.dtype, np.intp) and labels.max(initial=0) < 2**16:
        return set(np.flatnonzero(np.bincount(labels.ravel())).tolist()) - {0}
    return set(np.unique(labels).tolist()) - {0}


def choose_slices(
    labels: np.ndarray, roi_values: list[int], image: np.ndarray, context: int, axis: str = "axial"
) -> list[int]:
    """Every slice along ``axis`` holding a region of interest, plus ``context`` evenly spaced slices without one.

    Context slices come from slices with some contrast (near-constant slices carry nothing)."""
    along = AXES[axis][0]
    others = tuple(a for a in range(3) if a != along)
    has_roi = np.isin(labels, roi_values).any(axis=others)
    roi_slices = np.flatnonzero(has_roi).tolist()
    spread = np.moveaxis(image, along, -1).reshape(-1, image.shape[along]).std(axis=0)
    candidates = np.flatnonzero(~has_roi & (spread > 1.0)).tolist()
    count = min(context, len(candidates))
    # interior quantiles (1/(n+1), ..., n/(n+1)): the volume's first and last slices are rarely informative
    context_slices = {candidates[int(len(candidates) * (i + 1) / (count + 1))] for i in range(count)}
    return sorted(roi_slices + list(context_slices))


def slicing_axis(shape: tuple[int, ...], wanted: str, min_side: int) -> str | None:
    """The axis to cut a volume of ``shape`` (RAS+) along: the catalog's ``wanted`` axis when its slices are at
    least ``min_side`` pixels each way, else the axis the volume has fewest voxels along (the one it was acquired
    along: a thin stack of sagittal slices is cut sagittally, a single slice is itself), when its slices are that
    large; None when no axis gives images that large. So a volume is only cut along an axis it has, and a single
    slice never becomes strips."""
    for axis in (wanted, next(name for name, (along, _) in AXES.items() if along == int(np.argmin(shape[:3])))):
        along = AXES[axis][0]
        if min(side for a, side in enumerate(shape[:3]) if a != along) >= min_side:
            return axis
    return None


SIDE_TOLERANCE = 0.05
"""A sagittal slice within this fraction of the volume's width of its centre lies on the midline."""


def slice_side(axis: str, index: int, size: int) -> str | None:
    """Which side of the patient a sagittal slice lies on, judged against the centre of the volume's left-right
    extent (the field of view is centred on the patient); None for other slices. RAS+: x increases to the right."""
    if axis != "sagittal":
        return None
    offset = (index - (size - 1) / 2) / max(size, 1)
    if abs(offset) <= SIDE_TOLERANCE:
        return "midline"
    return "right" if offset > 0 else "left"


class VolumeSlicer(InputStage):
    """Reads an image volume and its label map (NIfTI, or a DICOM series with its SEG and RTSTRUCT files: the
    source's reader); emits one row per chosen slice, or a reject."""

    name = "slice_volumes"
    version = "2"
    batch_size = 1  # one volume per task: volumes are read and sliced in parallel
    reads = (
        "source_relpath", "file_relpath", "label_relpath", "annotation_files", "sequence", "modality", "body_region",
    )  # fmt: skip
    writes = (
        "id", "modality", "body_region", "sequence", "image", "width", "height", "axis", "slice_index", "spacing_mm",
        "patient_orientation", "view", "slice_side", "label_slice",
    )  # fmt: skip

    def __init__(
        self,
        source: SourceEntry,
        *,
        root: Path,
        image_size: int,
        min_image_side: int,
        context_slices: int,
        unannotated_slices: int,
        limits: InputLimits,
    ):
        """``root``: the staged source's directory; ``image_size``: the longest side of an output image (0: kept);
        ``min_image_side``: the shortest side a slice may have (``slicing_axis``); ``context_slices``: slices
        without a lesion kept per volume, unless the catalog entry sets its own; ``unannotated_slices``: slices
        kept of a volume without annotations, for the expert that follows or as image-level records (0: such a
        volume is rejected); ``limits``: what one input may claim before it is decoded."""
        self.source = source
        self.root = root
        self.image_size = image_size
        self.min_image_side = min_image_side
        self.limits = limits
        self.reader = reader_for(source.format, source.layout)(source, self.root, self.limits)
        self.context = source.slicing.context_slices if source.slicing.context_slices is not None else context_slices
        self.roi_values = source.roi_values()
        self.unannotated_slices = unannotated_slices

    def channels(self, row: dict, image: Volume) -> list[tuple[str | None, np.ndarray]]:
        """(sequence name, 3D voxels) per channel: one for a 3D image, each channel of a 4D one."""
        if image.data.ndim == 3:
            return [(row.get("sequence"), image.data)]
        names = self.source.channels or {}
        return [(names.get(str(c), f"channel {c}"), image.data[..., c]) for c in range(image.data.shape[3])]

    def rows_for(self, row: dict) -> list[dict]:
        image, labels = self.reader.read(row, unannotated=self.unannotated_slices > 0)
        present = label_values(labels)
        annotated = bool(row.get("label_relpath") or row.get("annotation_files"))
        if annotated and not present:
            raise InputRejected("label map is empty", "no annotated structure to describe")
        unknown = sorted(present - set(self.source.labels))
        if unknown:
            raise InputRejected("label map holds values the catalog entry does not define", listed(unknown))
        axis = slicing_axis(image.data.shape, self.source.slicing.axis, self.min_image_side)
        if axis is None:
            raise InputRejected(
                "volume too small to slice",
                f"{'x'.join(map(str, image.data.shape[:3]))} voxels: no axis gives slices of at least "
                f"{self.min_image_side} pixels each way (MEDTRINITY_MIN_IMAGE_SIDE)",
            )
        channels = self.channels(row, image)
        context = self.context if annotated else self.unannotated_slices
        chosen = choose_slices(labels, self.roi_values, channels[0][1], context, axis)
        if not chosen:
            raise InputRejected("no slice holds a lesion or enough contrast to keep as context")
        return [
            self.slice_row(row, image, labels, axis, index, sequence, voxels, multichannel=len(channels) > 1)
            for sequence, voxels in channels
            for index in chosen
        ]

    def slice_row(
        self, row: dict, image: Volume, labels: np.ndarray, axis: str, index: int, sequence, voxels, multichannel: bool
    ) -> dict:
        """The row of one slice of one channel: its 8-bit image in display view, its label slice and geometry."""
        along, orientation = AXES[axis]
        modality = row.get("modality") or self.source.modality
        region = row.get("body_region") or self.source.body_region
        window = self.source.display_window(modality, region)
        pixels = window_to_uint8(
            display_view(plane(voxels, along, index)),
            window.center if window else None,
            window.width if window else None,
        )
        label_slice = display_view(plane(labels, along, index)).astype("<u2")
        pixels, label_slice, scale = fit_within(pixels, label_slice, self.image_size)
        height, width = pixels.shape
        col_mm, row_mm = (image.spacing_mm[a] for a in range(3) if a != along)
        channel_key = f"{row['source_relpath']}#{sequence}" if multichannel else row["source_relpath"]
        prefix = f"{sequence}_" if multichannel else ""
        folder = f"{self.source.id}/{row['source_relpath'].split('.')[0]}"
        return dict(
            row,
            id=record_id(self.source.id, channel_key, axis, index),
            modality=modality,
            body_region=region,
            sequence=sequence,
            image={"bytes": encode_png(pixels), "path": f"{folder}/{prefix}{axis}_{index:04d}.png"},
            width=width,
            height=height,
            axis=axis,
            slice_index=index,
            spacing_mm=[row_mm / scale, col_mm / scale, image.spacing_mm[along]],
            patient_orientation=orientation,
            view=None,
            slice_side=slice_side(axis, index, voxels.shape[along]),
            label_slice=np.ascontiguousarray(label_slice, dtype="<u2").tobytes(),
        )
