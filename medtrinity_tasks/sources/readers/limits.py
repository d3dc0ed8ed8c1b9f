"""What one input may claim before it is decoded, and what a reject reason may quote of it.

A compressed file can claim far more than it holds: a few megabytes of gzip, deflate or PNG data
inflate to gigabytes. Readers check a file's claims (shape, sample size, frames) against these
limits before they decode anything, so a bomb costs a header read and ends as a reject with its
numbers; and reasons quote source text (values, names, exception messages) only up to a bound."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from medtrinity_tasks.config import Settings
from medtrinity_tasks.errors import InputRejected
from medtrinity_tasks.phi import shortened

LISTED_VALUES = 8
"""The most values of a set one reason lists; the rest are counted."""
FLOAT32_BYTES = 4
"""What the pipeline's float32 copy of an image adds per voxel or pixel."""


@dataclass(frozen=True)
class InputLimits:
    """The three size settings, as readers take them (the stages pass their ``Settings``' values)."""

    max_voxels: int = Settings.model_fields["max_voxels"].default
    max_decoded_mb: int = Settings.model_fields["max_decoded_mb"].default
    max_image_pixels: int = Settings.model_fields["max_image_pixels"].default

    @classmethod
    def of(cls, settings: Settings) -> InputLimits:
        return cls(settings.max_voxels, settings.max_decoded_mb, settings.max_image_pixels)

    @property
    def max_decoded_bytes(self) -> int:
        return self.max_decoded_mb * 2**20

    def check_volume(self, dims: tuple[int, ...], itemsize: int, bytes_per_voxel: int, what: str = "volume") -> None:
        """Refuse a volume (or frames) whose ``dims`` hold more voxels than allowed, or whose voxels take more than
        allowed once decoded: ``itemsize`` bytes stored, ``bytes_per_voxel`` at the read's peak with its copies."""
        voxels = math.prod(dims)
        claimed = " x ".join(str(d) for d in dims)
        if min(dims, default=0) < 0:  # two negative sizes multiply into a positive count
            raise InputRejected(f"malformed {what} header", f"claims {claimed} voxels")
        if voxels > self.max_voxels:
            raise InputRejected(
                f"{what} too large",
                f"claims {claimed} voxels, more than the {self.max_voxels} allowed (MEDTRINITY_MAX_VOXELS)",
            )
        self.check_decoded(what, f"{claimed} voxels of {itemsize} bytes", voxels * bytes_per_voxel)

    def check_image(self, width: int, height: int, itemsize: int, bytes_per_pixel: int, what: str = "image") -> None:
        """Refuse a 2D image of more pixels than allowed, or of more bytes once decoded (as for ``check_volume``)."""
        if width * height > self.max_image_pixels:
            raise InputRejected(
                f"{what} too large",
                f"claims {width} x {height} pixels, more than the {self.max_image_pixels} allowed "
                "(MEDTRINITY_MAX_IMAGE_PIXELS)",
            )
        self.check_decoded(what, f"{width} x {height} pixels of {itemsize} bytes", width * height * bytes_per_pixel)

    def check_decoded(self, what: str, claimed: str, decoded_bytes: int) -> None:
        """Refuse ``decoded_bytes`` beyond the limit; ``claimed`` says what they are."""
        if decoded_bytes > self.max_decoded_bytes:
            raise InputRejected(
                f"{what} too large",
                f"claims {claimed} ({binary_size(decoded_bytes)} decoded), more than the "
                f"{self.max_decoded_mb} MiB allowed (MEDTRINITY_MAX_DECODED_MB)",
            )


DEFAULT_LIMITS = InputLimits()
"""The settings' defaults, for readers called outside a stage (tests, benchmarks)."""


def binary_size(nbytes: int) -> str:
    """'64.0 GiB': bytes in the largest binary unit that keeps the number at or above 1."""
    for unit, power in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if nbytes >= 2**power:
            return f"{nbytes / 2**power:.1f} {unit}"
    return f"{nbytes} bytes"


def listed(values: Iterable) -> str:
    """'3, 4, 5 and 9990 more': the first ``LISTED_VALUES`` of ``values`` (in their order), then how many remain."""
    values = list(values)
    shown = ", ".join(shortened(str(v)) for v in values[:LISTED_VALUES])
    rest = len(values) - LISTED_VALUES
    return f"{shown} and {rest} more" if rest > 0 else shown


def error_detail(exc: BaseException, path: Path) -> str:
    """An exception as 'Type: message' for a reason, on one line and quoted. The file is named by its base name,
    never cut: DICOM reasons are de-identified by replacing whole file names with their pseudonyms."""
    message = str(exc)
    for name in (str(path), repr(str(path))[1:-1], path.name, repr(path.name)[1:-1]):  # as said, or as repr() quotes it
        message = message.replace(name, "\0")
    message = " ".join(message.split())
    return f"{type(exc).__name__}: {shortened(message).replace(chr(0), path.name)}"
