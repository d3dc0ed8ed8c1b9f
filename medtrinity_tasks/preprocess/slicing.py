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


class VolumeSlicer(InputStage):
    """Reads an image volume and its label map (NIfTI, or a DICOM series with its SEG and RTSTRUCT files: the
    source's reader); emits one row per chosen slice, or a reject."""

    name = "slice_volumes"
    version = "1"
    batch_size = 1  # one volume per task: volumes are read and sliced in parallel
    reads = ("source_relpath", "file_relpath", "label_relpath", "annotation_files", "sequence")
    writes = (
        "id", "modality", "sequence", "image", "width", "height", "axis", "slice_index", "spacing_mm",
        "patient_orientation", "label_slice",
    )  # fmt: skip

    def __init__(
        self,
        source: SourceEntry,
        *,
        root: Path,
        image_size: int,
        context_slices: int,
        unannotated_slices: int,
        limits: InputLimits,
    ):
        """``root``: the staged source's directory; ``image_size``: the longest side of an output image (0: kept);
        ``context_slices``: slices without a lesion kept per volume, unless the catalog entry sets its own;
        ``unannotated_slices``: slices kept of a volume without annotations for the expert that follows (0: no
        expert follows, and such a volume is rejected); ``limits``: what one input may claim before it is decoded."""
        self.source = source
        self.root = root
        self.image_size = image_size
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
        axis = self.source.slicing.axis
        along, orientation = AXES[axis]
        channels = self.channels(row, image)
        context = self.context if annotated else self.unannotated_slices
        chosen = choose_slices(labels, self.roi_values, channels[0][1], context, axis)
        if not chosen:
            raise InputRejected("no slice holds a lesion or enough contrast to keep as context")
        col_mm, row_mm = (image.spacing_mm[a] for a in range(3) if a != along)
        window = self.source.display_window()
        folder = f"{self.source.id}/{row['source_relpath'].split('.')[0]}"
        slices = []
        for sequence, voxels in channels:
            channel_key = row["source_relpath"] if len(channels) == 1 else f"{row['source_relpath']}#{sequence}"
            prefix = f"{sequence}_" if len(channels) > 1 else ""
            for index in chosen:
                pixels = window_to_uint8(
                    display_view(plane(voxels, along, index)),
                    window.center if window else None,
                    window.width if window else None,
                )
                label_slice = display_view(plane(labels, along, index)).astype("<u2")
                pixels, label_slice, scale = fit_within(pixels, label_slice, self.image_size)
                height, width = pixels.shape
                slices.append(
                    dict(
                        row,
                        id=record_id(self.source.id, channel_key, axis, index),
                        modality=self.source.modality,
                        sequence=sequence,
                        image={"bytes": encode_png(pixels), "path": f"{folder}/{prefix}{axis}_{index:04d}.png"},
                        width=width,
                        height=height,
                        axis=axis,
                        slice_index=index,
                        spacing_mm=[row_mm / scale, col_mm / scale, image.spacing_mm[along]],
                        patient_orientation=orientation,
                        label_slice=np.ascontiguousarray(label_slice, dtype="<u2").tobytes(),
                    )
                )
        return slices
