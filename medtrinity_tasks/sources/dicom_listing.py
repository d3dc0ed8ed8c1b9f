"""The DICOM ``series`` layout: every file under the source directory, grouped into series from its headers."""

from __future__ import annotations

import os
import posixpath
from pathlib import Path

from medtrinity_tasks.config import load_settings
from medtrinity_tasks.errors import InputRejected
from medtrinity_tasks.phi import pseudonym, quote, scrub
from medtrinity_tasks.reasons import Reason, rejected
from medtrinity_tasks.sources.catalog import SourceEntry
from medtrinity_tasks.sources.confinement import confined
from medtrinity_tasks.sources.deid import file_aliases, salt_for
from medtrinity_tasks.sources.readers.dicom.series import DicomSeries, scan
from medtrinity_tasks.sources.readers.limits import InputLimits

BODY_PARTS = {
    "HEAD": "head", "BRAIN": "brain", "SKULL": "head", "NECK": "neck", "CHEST": "chest", "THORAX": "chest",
    "LUNG": "chest", "HEART": "heart", "BREAST": "breast", "ABDOMEN": "abdomen", "LIVER": "liver",
    "KIDNEY": "kidney", "PELVIS": "pelvis", "PROSTATE": "prostate", "ABDOMENPELVIS": "abdomen", "ABDPELVIS": "abdomen",
    "CHESTABDOMEN": "chest", "CHESTABDPELVIS": "chest", "WHOLEBODY": "whole body", "SPINE": "spine",
    "CSPINE": "cervical spine", "TSPINE": "thoracic spine", "LSPINE": "lumbar spine", "SHOULDER": "shoulder",
    "ELBOW": "elbow", "WRIST": "wrist", "HAND": "hand", "HIP": "hip", "KNEE": "knee", "ANKLE": "ankle",
    "FOOT": "foot", "EXTREMITY": "extremity", "ARM": "arm", "LEG": "leg", "JAW": "jaw", "EYE": "eye",
}  # fmt: skip
"""DICOM BodyPartExamined defined terms as body regions. Other values are free text, which is never repeated."""


def list_dicom_series(source: SourceEntry, root: Path, scope: list[str] | None = None) -> dict[str, dict]:
    """Every file under the source directory, grouped into series by the DICOM reader. A series is
    one input named by a salted pseudonym of its SeriesInstanceUID; a file that cannot be used is
    an input of its own, rejected, named by a pseudonym of its path. No folder or file name, which
    in DICOM trees often hold patient ids or dates, reaches an output. A 2D object is an input of its
    own, named by a pseudonym of its path. Each input carries its ``scope``, the pseudonyms a later
    listing finds it again by without reading other headers: the folders a series' files lie in, or
    a 2D object's own name (exports often hold thousands of radiographs in one folder)."""
    settings = load_settings()
    salt = salt_for(source, settings)
    wanted = set(scope) if scope is not None else None
    files = []
    for folder, _, names in os.walk(root):  # does not follow folder links: no loops
        relfolder = Path(folder).relative_to(root).as_posix()
        whole = wanted is None or pseudonym(salt, relfolder, "folder") in wanted
        relpaths = [Path(folder, name).relative_to(root).as_posix() for name in names]
        files += [p for p in relpaths if whole or pseudonym(salt, p, "image") in wanted]
    files.sort()

    def folders(relpaths) -> list[str]:
        return sorted({pseudonym(salt, posixpath.dirname(p) or ".", "folder") for p in relpaths})

    aliases = file_aliases(salt, files)
    inputs, readable = {}, []
    for relpath in files:  # before any header is read: dcmread follows links
        try:
            readable.append(confined(root, relpath))
        except InputRejected as exc:
            key = pseudonym(salt, relpath, "file")
            reason = exc.reason.reworded(scrub(exc.reason.text, {quote(relpath): key}))  # no file or folder name
            inputs[key] = rejected({"source_relpath": key, "scope": folders([relpath])}, reason)
    series, rejects = scan(readable, InputLimits.of(settings))
    for path, reason in rejects.items():
        relpath = path.relative_to(root).as_posix()
        key = pseudonym(salt, relpath, "file")
        scrubbed = reason.reworded(scrub(reason.text, aliases))
        inputs[key] = rejected({"source_relpath": key, "scope": folders([relpath])}, scrubbed)
    for found in series:
        images = [p.relative_to(root).as_posix() for p in found.files]
        annotations = [p.relative_to(root).as_posix() for p in (*found.segs, *found.rtstructs)]
        key = pseudonym(salt, images[0], "image") if found.planar else pseudonym(salt, found.key, "series")
        item = {
            "source_relpath": key,
            "member_files": images,
            "annotation_files": annotations,
            "scope": [key] if found.planar else folders(images + annotations),
            "modality": found.modality or source.modality,
            "body_region": BODY_PARTS.get((found.body_part or "").replace(" ", "").upper(), source.body_region),
        }
        inputs[key] = _kept_modality(source, found, item)
    return inputs


def _kept_modality(source: SourceEntry, found: DicomSeries, item: dict) -> dict:
    """The series' input, or its reject when the entry keeps other modalities only (``modalities``)."""
    if source.modalities is None or item["modality"] in source.modalities:
        return item
    return rejected(
        item,
        Reason.of(
            "modality not among the source's modalities",
            f"{item['modality']}; the catalog entry keeps {', '.join(source.modalities)}",
        ),
    )
