"""Staging a source from the archives its provider ships (DeepLesion's zips, the Decathlon's tars,
ChestX-ray14's tar.gz files): members are extracted into the source directory, and a member that
would land outside it (absolute or ``..`` paths, links leading out or through other links, device
files) is refused with its reason instead of written. The pipeline itself reads staged files only,
never archives.

Every member is checked and written here rather than by tarfile's or zipfile's extraction, whose
filters have been bypassed (links to links, link chains longer than PATH_MAX, files written through
a linked folder): folders are made and opened one component at a time without following links,
files are written under a temporary name and renamed into place, and the bytes produced are counted
against the archive limits in the settings as they stream, so a bomb stops early."""

from __future__ import annotations

import os
import posixpath
import secrets
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO

from medtrinity_tasks.config import Settings, load_settings
from medtrinity_tasks.errors import MedtrinityError

CHUNK = 1 << 20
NAME_SHOWN = 200
"""The most characters of a member name kept in a refusal or an error message."""

LEAVES = "member path leaves the source directory"
LINK_LEADS_OUT = "link member leads outside the source directory"
THROUGH_LINK = "member path goes through a link"
NOT_EXTRACTED = "hard link to a member that is not an extracted file"
EMPTY = "empty member name"
SPECIAL = "special file (device or pipe) member"
READ_ERRORS = (OSError, EOFError, zlib.error, tarfile.TarError, zipfile.BadZipFile, RuntimeError, NotImplementedError)
"""What a damaged, encrypted or unsupported member raises while it is read (or written: OSError)."""

RATIO_FLOOR = 64 << 20
"""The ratio limit is judged once this much has been written: a small archive of uncompressed,
mostly empty label maps can shrink a thousandfold and is no danger to the disk."""


@dataclass
class Unpacked:
    archive: str
    extracted: int = 0
    refused: dict[str, str] = field(default_factory=dict)
    """Member name (shortened to NAME_SHOWN characters) -> why it was not extracted."""


@dataclass
class _Member:
    """One archive member, whichever the format: ``kind`` is file, dir, symlink, hardlink or
    special; ``refusal`` says why a member of its type is never extracted."""

    name: str
    kind: str
    mode: int = 0
    link: str = ""
    refusal: str = ""
    open: Callable[[], IO[bytes]] | None = None


class _Refused(Exception):
    """A member is not extracted; the message is its reason."""


def unpack(archive: Path, destination: Path, settings: Settings | None = None) -> Unpacked:
    """Extract the safe members of a tar (any compression) or zip archive into ``destination``;
    stops with MedtrinityError when the archive crosses a size, member-count or ratio limit."""
    archive, destination = Path(archive), Path(destination)
    settings = settings or load_settings()
    destination.mkdir(parents=True, exist_ok=True)
    try:
        size = archive.stat().st_size
        members = _zip_members if zipfile.is_zipfile(archive) else _tar_members if tarfile.is_tarfile(archive) else None
    except OSError as exc:
        raise MedtrinityError(f"cannot read archive {archive}: {exc.strerror or exc}") from None
    if members is None:
        raise MedtrinityError(f"{archive} is not a tar or zip archive")
    extraction = _Extraction(archive.name, destination, size, settings)
    try:
        with closing(members(archive)) as listed:
            for member in listed:
                extraction.add(member)
    except READ_ERRORS as exc:
        raise MedtrinityError(f"archive {archive} is damaged ({extraction.progress()}): {_shown(str(exc))}") from None
    finally:
        extraction.close()
    return extraction.result


def _tar_members(archive: Path) -> Iterator[_Member]:
    with tarfile.open(archive) as tar:
        for info in tar:
            if info.isreg():
                yield _Member(info.name, "file", info.mode, open=partial(tar.extractfile, info))
            elif info.isdir() or info.issym() or info.islnk():
                kind = "dir" if info.isdir() else "symlink" if info.issym() else "hardlink"
                yield _Member(info.name, kind, info.mode, info.linkname)
            elif info.ischr() or info.isblk() or info.isfifo():
                yield _Member(info.name, "special", refusal=SPECIAL)
            else:
                yield _Member(info.name, "special", refusal=f"unsupported member type: {info.type!r}")


def _zip_members(archive: Path) -> Iterator[_Member]:
    with zipfile.ZipFile(archive) as bundle:
        for info in bundle.infolist():
            mode = info.external_attr >> 16  # Unix st_mode where the archiver recorded one, else 0
            if info.is_dir() or stat.S_ISDIR(mode):
                yield _Member(info.filename, "dir")
            elif stat.S_IFMT(mode) in (0, stat.S_IFREG):
                yield _Member(info.filename, "file", mode, open=partial(bundle.open, info))
            elif stat.S_ISLNK(mode):  # zipfile would write it as a file holding the target
                yield _Member(info.filename, "symlink", refusal="symbolic link member")
            else:
                yield _Member(info.filename, "special", refusal=SPECIAL)


def _shown(name: str) -> str:
    return name if len(name) <= NAME_SHOWN else name[: NAME_SHOWN - 3] + "..."


def _size(count: float) -> str:
    for unit in ("bytes", "KiB", "MiB"):
        if count < 1024:
            return f"{count:.0f} bytes" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"


def _parts(name: str) -> tuple[str, ...]:
    """The folders and file a member name makes inside the destination (empty for the destination
    itself, as ``./``); refuses names that leave it or that another system would read otherwise."""
    as_posix = name.replace("\\", "/")
    if as_posix.startswith("/") or as_posix[1:2] == ":" or posixpath.normpath(as_posix).split("/")[0] == "..":
        raise _Refused(LEAVES)
    if "\0" in name:
        raise _Refused("member name holds a NUL byte")
    if "\\" in name:
        raise _Refused("member name has a backslash (a Windows path)")
    if not name:
        raise _Refused(EMPTY)
    parts = tuple(part for part in name.split("/") if part not in ("", "."))
    if ".." in parts:
        raise _Refused("member name has a '..' component")
    return parts


def _what(mode: int) -> str:
    return "a folder" if stat.S_ISDIR(mode) else "a link" if stat.S_ISLNK(mode) else "a file"


class _Extraction:
    """Writes the members of one archive into the destination, counting what it produces."""

    def __init__(self, archive: str, destination: Path, archive_size: int, settings: Settings):
        self.result = Unpacked(archive)
        self.root = os.open(destination, os.O_RDONLY | os.O_DIRECTORY)
        self.root_path = os.path.realpath(destination)
        self.settings, self.archive_size = settings, archive_size
        self.members = self.produced = 0
        self.current = ""
        self.files: set[tuple[str, ...]] = set()
        """Regular files this unpack wrote: the only members a hard link may copy."""
        self.link_targets: set[tuple[str, ...]] = set()
        """Where the links made so far point, so that no later link is made there (a chain)."""
        self.refused_links: set[tuple[str, ...]] = set()
        """Links not made, so that no member meant to go through one is written in its place."""

    def close(self) -> None:
        os.close(self.root)

    def progress(self) -> str:
        if not self.members:
            return "stopped before its first member"
        return f"stopped at member {_shown(self.current)!r} after {_size(self.produced)}"

    def add(self, member: _Member) -> None:
        self.members += 1
        self.current = member.name
        if self.members > self.settings.archive_max_members:
            raise self._limit(f"holds more than {self.settings.archive_max_members:,} members", "MEMBERS")
        parts: tuple[str, ...] = ()
        try:
            parts = _parts(member.name)
            if member.refusal:
                raise _Refused(member.refusal)
            if not parts and member.kind != "dir":
                raise _Refused(EMPTY)
            if member.kind == "dir":
                with self._folder(parts):
                    pass
            elif member.kind == "symlink":
                self._symlink(parts, member.link)
            else:
                self._file(parts, member)
        except _Refused as refusal:
            self.result.refused[_shown(member.name)] = str(refusal)
            if member.kind == "symlink":
                self.refused_links.add(parts)
        except READ_ERRORS as exc:
            detail = getattr(exc, "strerror", None) or str(exc)  # zipfile's messages name the member
            self.result.refused[_shown(member.name)] = f"cannot be extracted: {_shown(detail)}"

    def _limit(self, crossed: str, setting: str) -> MedtrinityError:
        return MedtrinityError(
            f"archive {self.result.archive} {crossed} (MEDTRINITY_ARCHIVE_MAX_{setting}): {self.progress()}"
        )

    @contextmanager
    def _folder(self, parts: tuple[str, ...], create: bool = True) -> Iterator[int]:
        """A descriptor of the real folder ``parts`` inside the destination, made (``create``) and
        opened one component at a time: a component that is a link or a file is refused, so nothing
        is ever written through a link, whatever links the archive made earlier."""
        folder = os.dup(self.root)
        try:
            for depth, part in enumerate(parts, 1):
                if parts[:depth] in self.refused_links:
                    raise _Refused(THROUGH_LINK)
                if create:
                    with suppress(FileExistsError):
                        os.mkdir(part, 0o755, dir_fd=folder)
                mode = os.stat(part, dir_fd=folder, follow_symlinks=False).st_mode
                if stat.S_ISLNK(mode):
                    raise _Refused(THROUGH_LINK)
                if not stat.S_ISDIR(mode):
                    raise _Refused("member path goes through a file")
                child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=folder)
                os.close(folder)
                folder = child
            yield folder
        finally:
            os.close(folder)

    def _mode(self, parts: tuple[str, ...]) -> int | None:
        """What is at ``parts`` inside the destination (its lstat mode), None where nothing is."""
        try:
            with self._folder(parts[:-1], create=False) as folder:
                return os.stat(parts[-1], dir_fd=folder, follow_symlinks=False).st_mode
        except FileNotFoundError:
            return None

    def _symlink(self, parts: tuple[str, ...], target: str) -> None:
        """Make a link whose target, resolved from the link's folder, stays inside the destination
        through real folders only and is not itself a link, so that its real path is its lexical
        one whatever the length of the path."""
        if not target or "\0" in target or "\\" in target:
            raise _Refused("link member target is not a relative POSIX path")
        if target.startswith("/"):
            raise _Refused(LINK_LEADS_OUT)
        resolved, steps, ends_on_step = list(parts[:-1]), [], False
        for part in target.split("/"):
            if part in ("", "."):
                continue
            if part == "..":
                if not resolved:
                    raise _Refused(LINK_LEADS_OUT)
                resolved.pop()
            else:
                resolved.append(part)
                steps.append(tuple(resolved))
            ends_on_step = part != ".."
        if parts in self.link_targets:
            raise _Refused("link member is the target of another link")
        with self._folder(parts[:-1]) as folder:
            for index, step in enumerate(steps, 1):
                mode = self._mode(step)
                if mode is not None and stat.S_ISLNK(mode):
                    raise _Refused("link member points at another link")
                passed_through = index < len(steps) or not ends_on_step
                if passed_through and (mode is None or not stat.S_ISDIR(mode)):
                    raise _Refused("link member points through a path that is not a folder")
            existing = self._mode(parts)  # the same link again (the archive unpacked twice) is kept
            if existing is None:
                os.symlink(target, parts[-1], dir_fd=folder)
            elif not stat.S_ISLNK(existing) or os.readlink(parts[-1], dir_fd=folder) != target:
                raise _Refused(f"member path is taken by {_what(existing)}")
            real = os.path.realpath(os.path.join(self.root_path, *parts))
            if os.path.commonpath([real, self.root_path]) != self.root_path:
                os.unlink(parts[-1], dir_fd=folder)
                raise _Refused(LINK_LEADS_OUT)
        self.link_targets.add(tuple(resolved))

    def _file(self, parts: tuple[str, ...], member: _Member) -> None:
        if member.kind == "file":
            with member.open() as data:
                self._write(parts, data, member.mode)
            return
        try:
            source = _parts(member.link)
        except _Refused as refusal:
            raise _Refused(LINK_LEADS_OUT if str(refusal) == LEAVES else NOT_EXTRACTED) from None
        mode = self._mode(source) if source in self.files else None
        if mode is None or not stat.S_ISREG(mode):
            raise _Refused(NOT_EXTRACTED)
        with self._folder(source[:-1], create=False) as folder:
            copied = os.open(source[-1], os.O_RDONLY | os.O_NOFOLLOW, dir_fd=folder)
        with os.fdopen(copied, "rb") as data:  # a copy made here: tarfile's own would follow the archive's links
            self._write(parts, data, member.mode)

    def _write(self, parts: tuple[str, ...], data: IO[bytes], mode: int) -> None:
        """Write a regular file from ``data`` under a temporary name in its real folder, then rename
        it into place; permissions are at most rwxr-xr-x (no setuid, setgid, sticky or shared write),
        and the owner may always read and write it."""
        with self._folder(parts[:-1]) as folder:
            existing = self._mode(parts)
            if existing is not None and not stat.S_ISREG(existing):
                raise _Refused(f"member path is taken by {_what(existing)}")
            temporary = f".unpacking-{secrets.token_hex(8)}"
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
            try:
                with os.fdopen(os.open(temporary, flags, 0o600, dir_fd=folder), "wb") as out:
                    while chunk := data.read(CHUNK):  # counts what inflates, not what a header declares
                        self._count(len(chunk))
                        out.write(chunk)
                    os.fchmod(out.fileno(), (mode & 0o755 | 0o600) if mode else 0o644)
                os.replace(temporary, parts[-1], src_dir_fd=folder, dst_dir_fd=folder)
            except BaseException:
                with suppress(FileNotFoundError):
                    os.unlink(temporary, dir_fd=folder)
                raise
        self.files.add(parts)
        self.result.extracted += 1

    def _count(self, produced: int) -> None:
        self.produced += produced
        if self.produced > self.settings.archive_max_gb * 2**30:
            raise self._limit(f"unpacks to more than {self.settings.archive_max_gb:g} GiB", "GB")
        if self.produced > max(self.settings.archive_max_ratio * self.archive_size, RATIO_FLOOR):
            raise self._limit(f"unpacks to more than {self.settings.archive_max_ratio:g} times its size", "RATIO")
