"""The DICOM ``series`` layout: every file under the source directory, grouped into series from its headers."""

from __future__ import annotations

import os
import posixpath
from pathlib import Path

from medtrinity_tasks.config import load_settings
from medtrinity_tasks.errors import InputRejected
from medtrinity_tasks.phi import pseudonym, quote, scrub
from medtrinity_tasks.reasons import rejected
from medtrinity_tasks.sources.catalog import SourceEntry
from medtrinity_tasks.sources.confinement import confined
from medtrinity_tasks.sources.deid import file_aliases, salt_for
from medtrinity_tasks.sources.readers.dicom.series import scan
from medtrinity_tasks.sources.readers.limits import InputLimits


def list_dicom_series(source: SourceEntry, root: Path, scope: list[str] | None = None) -> dict[str, dict]:
    """Every file under the source directory, grouped into series by the DICOM reader. A series is
    one input named by a salted pseudonym of its SeriesInstanceUID; a file that cannot be used is
    an input of its own, rejected, named by a pseudonym of its path. No folder or file name, which
    in DICOM trees often hold patient ids or dates, reaches an output. Each input carries the
    pseudonyms of the folders its files lie in, which a later listing can be scoped to."""
    settings = load_settings()
    salt = salt_for(source, settings)
    wanted = set(scope) if scope is not None else None
    files = []
    for folder, _, names in os.walk(root):  # does not follow folder links: no loops
        relfolder = Path(folder).relative_to(root).as_posix()
        if wanted is None or pseudonym(salt, relfolder, "folder") in wanted:
            files += [Path(folder, name).relative_to(root).as_posix() for name in names]
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
            inputs[key] = rejected({"source_relpath": key, "folders": folders([relpath])}, reason)
    series, rejects = scan(readable, InputLimits.of(settings))
    for path, reason in rejects.items():
        relpath = path.relative_to(root).as_posix()
        key = pseudonym(salt, relpath, "file")
        scrubbed = reason.reworded(scrub(reason.text, aliases))
        inputs[key] = rejected({"source_relpath": key, "folders": folders([relpath])}, scrubbed)
    for found in series:
        key = pseudonym(salt, found.series_uid, "series")
        images = [p.relative_to(root).as_posix() for p in found.files]
        annotations = [p.relative_to(root).as_posix() for p in (*found.segs, *found.rtstructs)]
        inputs[key] = {
            "source_relpath": key,
            "member_files": images,
            "annotation_files": annotations,
            "folders": folders(images + annotations),
        }
    return inputs
