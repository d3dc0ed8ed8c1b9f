"""Staging a source from the archives its provider ships (DeepLesion's zips, the Decathlon's tars,
ChestX-ray14's tar.gz files): members are extracted into the source directory, and a member that
would land outside it (absolute or ``..`` paths, links leading out, device files) is refused with
its reason instead of written. The pipeline itself reads staged files only, never archives."""

from __future__ import annotations

import stat
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from medtrinity_tasks.errors import MedtrinityError
from medtrinity_tasks.sources.layouts import escapes_root


@dataclass
class Unpacked:
    archive: str
    extracted: int = 0
    refused: dict[str, str] = field(default_factory=dict)
    """Member name -> why it was not extracted."""


def unpack(archive: Path, destination: Path) -> Unpacked:
    """Extract the safe members of a tar (any compression) or zip archive into ``destination``."""
    archive, destination = Path(archive), Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        return _unzip(archive, destination)
    try:
        is_tar = tarfile.is_tarfile(archive)
    except OSError as exc:
        raise MedtrinityError(f"cannot read archive {archive}: {exc.strerror or exc}") from None
    if not is_tar:
        raise MedtrinityError(f"{archive} is not a tar or zip archive")
    return _untar(archive, destination)


def _untar(archive: Path, destination: Path) -> Unpacked:
    result = Unpacked(archive.name)
    with tarfile.open(archive) as tar:
        for member in tar:
            if escapes_root(member.name):  # the "data" filter would strip a leading "/"; refuse it instead
                result.refused[member.name] = "member path leaves the source directory"
                continue
            try:
                # the "data" filter refuses "..", links leading out and special files
                tar.extract(member, destination, filter="data")
            except tarfile.FilterError as exc:
                result.refused[member.name] = _filter_reason(exc)
            except (OSError, tarfile.TarError) as exc:
                result.refused[member.name] = f"cannot be extracted ({type(exc).__name__})"
            else:
                result.extracted += member.isfile()
    return result


def _filter_reason(exc: tarfile.FilterError) -> str:
    if isinstance(exc, tarfile.AbsolutePathError | tarfile.OutsideDestinationError):
        return "member path leaves the source directory"
    if isinstance(exc, tarfile.AbsoluteLinkError | tarfile.LinkOutsideDestinationError):
        return "link member leads outside the source directory"
    if isinstance(exc, tarfile.SpecialFileError):
        return "special file (device or pipe) member"
    return f"refused by the tar data filter ({type(exc).__name__})"


def _unzip(archive: Path, destination: Path) -> Unpacked:
    result = Unpacked(archive.name)
    with zipfile.ZipFile(archive) as bundle:
        for info in bundle.infolist():
            name = info.filename
            if escapes_root(name):
                result.refused[name] = "member path leaves the source directory"
            elif stat.S_ISLNK(info.external_attr >> 16):
                result.refused[name] = "symbolic link member"  # zipfile would write it as a file holding the target
            else:
                bundle.extract(info, destination)
                result.extracted += not info.is_dir()
    return result
