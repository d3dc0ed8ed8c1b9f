"""Unpacking a provider's archives into a source directory: members that would escape it are
refused with their reason, and nothing is written outside, including by the archives known to get
past tarfile's own "data" filter; an archive crossing a size, member-count or ratio limit stops."""

import io
import os
import posixpath
import stat
import struct
import subprocess
import sys
import tarfile
import zipfile
import zlib

import pytest

from medtrinity_tasks.cli import main
from medtrinity_tasks.config import load_settings
from medtrinity_tasks.errors import MedtrinityError
from medtrinity_tasks.sources.staging import unpack

LEAVES = "member path leaves the source directory"
LINK_LEADS_OUT = "link member leads outside the source directory"
THROUGH_LINK = "member path goes through a link"
TO_A_LINK = "link member points at another link"
NOT_EXTRACTED = "hard link to a member that is not an extracted file"
SPECIAL = "special file (device or pipe) member"


def _tar(path, members: list[tarfile.TarInfo], data: dict[str, bytes], mode: str = "w:gz"):
    with tarfile.open(path, mode) as tar:
        for info in members:
            payload = data.get(info.name)
            if payload is not None:
                info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload) if payload is not None else None)


def _info(name: str, kind=tarfile.REGTYPE, target: str = "", mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, target, mode
    return info


@pytest.fixture
def hostile_tar(tmp_path):
    path = tmp_path / "Images_png_01.tar.gz"
    members = [
        _info("Images_png/000001_01_01/109.png"),
        _info("../escaped.txt"),
        _info("/tmp/absolute.txt"),
        _info("Images_png/passwd", tarfile.SYMTYPE, "/etc/passwd"),
        _info("Images_png/up", tarfile.SYMTYPE, "../../outside"),
        _info("Images_png/device", tarfile.CHRTYPE),
    ]
    _tar(path, members, {"Images_png/000001_01_01/109.png": b"png", "../escaped.txt": b"x", "/tmp/absolute.txt": b"x"})
    return path


@pytest.fixture
def destination(tmp_path):
    """An empty destination with an empty sentinel folder beside it, where an escaping member would land."""
    (tmp_path / "sandbox" / "sentinel").mkdir(parents=True)
    return tmp_path / "sandbox" / "destination"


def _nothing_outside(destination, *archives):
    sandbox = destination.parent
    assert sorted(os.listdir(sandbox)) == ["destination", "sentinel"]
    assert os.listdir(sandbox / "sentinel") == []
    assert sorted(os.listdir(sandbox.parent)) == sorted([archive.name for archive in archives] + ["sandbox"])


def _files(root) -> dict[str, int]:
    """Relative path -> size of every file (not folder) under ``root``, links included."""
    found = {}
    for folder, folders, names in os.walk(root):
        for name in names + [f for f in folders if os.path.islink(os.path.join(folder, f))]:
            path = os.path.join(folder, name)
            found[os.path.relpath(path, root)] = os.lstat(path).st_size
    return found


def test_tar_members_escaping_the_source_are_refused(hostile_tar, tmp_path):
    destination = tmp_path / "staged" / "deeplesion"
    result = unpack(hostile_tar, destination)
    assert result.extracted == 1
    assert (destination / "Images_png" / "000001_01_01" / "109.png").read_bytes() == b"png"
    assert result.refused == {
        "../escaped.txt": "member path leaves the source directory",
        "/tmp/absolute.txt": "member path leaves the source directory",
        "Images_png/passwd": "link member leads outside the source directory",
        "Images_png/up": "link member leads outside the source directory",
        "Images_png/device": "special file (device or pipe) member",
    }
    assert not (tmp_path / "staged" / "escaped.txt").exists() and not (tmp_path / "escaped.txt").exists()
    assert sorted(p.name for p in destination.rglob("*")) == ["000001_01_01", "109.png", "Images_png"]


def test_zip_members_escaping_the_source_are_refused(tmp_path):
    path = tmp_path / "kvasir-seg.zip"
    with zipfile.ZipFile(path, "w") as bundle:
        bundle.writestr("Kvasir-SEG/images/a.jpg", b"jpg")
        bundle.writestr("../../evil.jpg", b"x")
        bundle.writestr("C:/windows/evil.jpg", b"x")
        link = zipfile.ZipInfo("Kvasir-SEG/link")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        bundle.writestr(link, "/etc/passwd")
    result = unpack(path, tmp_path / "staged")
    assert result.extracted == 1 and (tmp_path / "staged" / "Kvasir-SEG" / "images" / "a.jpg").exists()
    assert result.refused == {
        "../../evil.jpg": "member path leaves the source directory",
        "C:/windows/evil.jpg": "member path leaves the source directory",
        "Kvasir-SEG/link": "symbolic link member",
    }
    assert not (tmp_path / "evil.jpg").exists()


def test_names_that_leave_the_destination_or_read_otherwise_are_refused(destination, tmp_path):
    sentinel = destination.parent / "sentinel"
    nul = _info("data/evil\0.txt")
    nul.pax_headers = {"path": nul.name}  # a ustar name field would end at the NUL
    members = [
        _info("./", tarfile.DIRTYPE),
        _info("data/ok.txt"),
        _info(f"{sentinel}/absolute.txt"),
        _info("../escaped.txt"),
        _info("data/../../../climbed.txt"),
        _info("data/../inside.txt"),
        _info("C:\\sentinel\\evil.txt"),
        _info("..\\sentinel\\evil.txt"),
        _info("data\\evil.txt"),
        nul,
        _info(""),
    ]
    _tar(archive := tmp_path / "names.tar.gz", members, {info.name: b"x" for info in members if info.isreg()})
    result = unpack(archive, destination)
    assert result.refused == {
        f"{sentinel}/absolute.txt": LEAVES,
        "../escaped.txt": LEAVES,
        "data/../../../climbed.txt": LEAVES,
        "data/../inside.txt": "member name has a '..' component",
        "C:\\sentinel\\evil.txt": LEAVES,
        "..\\sentinel\\evil.txt": LEAVES,
        "data\\evil.txt": "member name has a backslash (a Windows path)",
        "data/evil\0.txt": "member name holds a NUL byte",
        "": "empty member name",
    }
    assert result.extracted == 1 and _files(destination) == {"data/ok.txt": 1}
    _nothing_outside(destination, archive)


def test_links_leading_out_or_to_other_links_are_refused(destination, tmp_path):
    sentinel = destination.parent / "sentinel"
    members = [
        _info("data/file"),
        _info("data/link", tarfile.SYMTYPE, "file"),
        _info("data/root", tarfile.SYMTYPE, ".."),  # the destination itself: inside
        _info("up", tarfile.SYMTYPE, ".."),
        _info("data/up", tarfile.SYMTYPE, "../../sentinel"),
        _info("absolute", tarfile.SYMTYPE, str(sentinel)),
        _info("to_link", tarfile.SYMTYPE, "data/link"),
        _info("climb", tarfile.SYMTYPE, "data/root/../sentinel"),  # lexically data/sentinel, really the sentinel
        _info("climb/evil"),
        _info("dangling", tarfile.SYMTYPE, "later"),
        _info("later", tarfile.SYMTYPE, "data"),  # would make dangling a link to a link
        _info("through_missing", tarfile.SYMTYPE, "missing/../data"),
        _info("windows", tarfile.SYMTYPE, "..\\sentinel"),
    ]
    _tar(archive := tmp_path / "links.tar.gz", members, {"data/file": b"scan", "climb/evil": b"x"})
    result = unpack(archive, destination)
    assert result.refused == {
        "up": LINK_LEADS_OUT,
        "data/up": LINK_LEADS_OUT,
        "absolute": LINK_LEADS_OUT,
        "to_link": TO_A_LINK,
        "climb": TO_A_LINK,
        "climb/evil": THROUGH_LINK,
        "later": "link member is the target of another link",
        "through_missing": "link member points through a path that is not a folder",
        "windows": "link member target is not a relative POSIX path",
    }
    assert os.readlink(destination / "data" / "link") == "file" and os.readlink(destination / "dangling") == "later"
    assert sorted(_files(destination)) == ["dangling", "data/file", "data/link", "data/root"]
    _nothing_outside(destination, archive)


def test_nested_links_longer_than_path_max_do_not_lead_out(destination, tmp_path):
    """CVE-2025-4517: past PATH_MAX, realpath stops resolving links, so a link through sixteen levels
    of links looks inside to tarfile's filter while its real path is the sentinel."""
    folder, steps, members, path = "d" * 247, "abcdefghijklmnop", [], ""
    for step in steps:
        members += [
            _info(posixpath.join(path, folder), tarfile.DIRTYPE),
            _info(posixpath.join(path, step), tarfile.SYMTYPE, folder),
        ]
        path = posixpath.join(path, folder)
    deep_link = posixpath.join(*steps, "l" * 254)
    members += [
        _info(deep_link, tarfile.SYMTYPE, "../" * len(steps)),
        _info("escape", tarfile.SYMTYPE, deep_link + "/../sentinel"),
        _info("escape/evil"),
    ]
    _tar(archive := tmp_path / "cve-2025-4517.tar", members, {"escape/evil": b"evil"}, mode="w")
    result = unpack(archive, destination)
    assert result.refused == {deep_link[:197] + "...": THROUGH_LINK, "escape": TO_A_LINK, "escape/evil": THROUGH_LINK}
    assert result.extracted == 0
    _nothing_outside(destination, archive)


def test_members_are_never_written_through_a_linked_folder(destination, tmp_path):
    sentinel = destination.parent / "sentinel"
    (destination / "data").mkdir(parents=True)
    os.symlink(sentinel, destination / "earlier")  # left by an earlier unpack or by hand
    members = [
        _info("linkdir", tarfile.SYMTYPE, "data"),
        _info("linkdir/evil"),
        _info("outdir", tarfile.SYMTYPE, "../sentinel"),
        _info("outdir/evil"),
        _info("earlier/evil"),
        _info("earlier/sub", tarfile.DIRTYPE),
        _info("earlier", tarfile.SYMTYPE, "data"),
    ]
    _tar(
        archive := tmp_path / "through.tar.gz",
        members,
        {"linkdir/evil": b"x", "outdir/evil": b"x", "earlier/evil": b"x"},
    )
    result = unpack(archive, destination)
    assert result.refused == {
        "linkdir/evil": THROUGH_LINK,
        "outdir": LINK_LEADS_OUT,
        "outdir/evil": THROUGH_LINK,
        "earlier/evil": THROUGH_LINK,
        "earlier/sub": THROUGH_LINK,
        "earlier": "member path is taken by a link",
    }
    assert os.listdir(destination / "data") == [] and os.readlink(destination / "linkdir") == "data"
    _nothing_outside(destination, archive)


def test_hard_links_are_copies_of_files_already_extracted(destination, tmp_path):
    members = [
        _info("data/file"),
        _info("copy", tarfile.LNKTYPE, "data/file"),
        _info("passwd", tarfile.LNKTYPE, "/etc/passwd"),
        _info("climb", tarfile.LNKTYPE, "../sentinel"),
        _info("sym", tarfile.SYMTYPE, "data/file"),
        _info("to_sym", tarfile.LNKTYPE, "sym"),
        _info("to_folder", tarfile.LNKTYPE, "data"),
        _info("early", tarfile.LNKTYPE, "late"),
        _info("late"),
    ]
    _tar(archive := tmp_path / "hardlinks.tar.gz", members, {"data/file": b"scan", "late": b"late"})
    result = unpack(archive, destination)
    assert result.refused == {
        "passwd": LINK_LEADS_OUT,
        "climb": LINK_LEADS_OUT,
        "to_sym": NOT_EXTRACTED,
        "to_folder": NOT_EXTRACTED,
        "early": NOT_EXTRACTED,
    }
    copy, original = os.lstat(destination / "copy"), os.lstat(destination / "data" / "file")
    assert (
        stat.S_ISREG(copy.st_mode) and copy.st_ino != original.st_ino and (destination / "copy").read_bytes() == b"scan"
    )
    assert result.extracted == 3 and sorted(_files(destination)) == ["copy", "data/file", "late", "sym"]
    _nothing_outside(destination, archive)


def test_special_files_are_refused_and_permissions_are_stripped(destination, tmp_path):
    members = [
        _info("dev/null", tarfile.CHRTYPE),
        _info("dev/disk", tarfile.BLKTYPE),
        _info("fifo", tarfile.FIFOTYPE),
        _info("bin/setuid", mode=0o6777),
        _info("shared", mode=0o666),
        _info("private", mode=0o600),
        _info("sticky", tarfile.DIRTYPE, mode=0o1777),
    ]
    _tar(archive := tmp_path / "special.tar.gz", members, {"bin/setuid": b"#!", "shared": b"x", "private": b"x"})
    result = unpack(archive, destination)
    assert result.refused == {"dev/null": SPECIAL, "dev/disk": SPECIAL, "fifo": SPECIAL}
    modes = {name: stat.S_IMODE(os.lstat(destination / name).st_mode) for name in ("bin/setuid", "shared", "private")}
    assert modes == {"bin/setuid": 0o755, "shared": 0o644, "private": 0o600}
    assert stat.S_IMODE(os.lstat(destination / "sticky").st_mode) & ~0o755 == 0
    assert not (destination / "dev").exists() and not (destination / "fifo").exists()
    _nothing_outside(destination, archive)


def test_zip_links_climbing_names_and_lying_sizes_are_refused(destination, tmp_path):
    path = tmp_path / "hostile.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as bundle:
        for name, kind in (("linkdir", stat.S_IFLNK | 0o777), ("data/fifo", stat.S_IFIFO | 0o644)):
            info = zipfile.ZipInfo(name)
            info.external_attr = kind << 16
            bundle.writestr(info, "../sentinel")
        bundle.writestr("linkdir/evil", b"x")
        bundle.writestr("../sentinel/evil", b"x")
        bundle.writestr("data/ok.txt", b"ok")
        bundle.writestr("data/big.bin", b"\0" * 10_000_000)  # last: its directory entry ends the file
    lying = bytearray(path.read_bytes())
    header = zipfile.ZipFile(path).getinfo("data/big.bin").header_offset
    struct.pack_into("<I", lying, header + 22, 10)  # the local header's uncompressed size
    struct.pack_into("<I", lying, lying.rfind(b"PK\x01\x02") + 24, 10)  # and the central directory's
    path.write_bytes(lying)
    result = unpack(path, destination)
    assert result.refused == {
        "linkdir": "symbolic link member",
        "data/fifo": SPECIAL,
        "linkdir/evil": THROUGH_LINK,
        "../sentinel/evil": LEAVES,
        "data/big.bin": "cannot be extracted: Bad CRC-32 for file 'data/big.bin'",
    }
    assert _files(destination) == {"data/ok.txt": 2}  # the lying member's partial copy is removed
    _nothing_outside(destination, path)


ZEROS = b"\0" * (16 << 20)
BOMB = 1 << 30
UNPACK_AND_MEASURE = """
import sys
from medtrinity_tasks.errors import MedtrinityError
from medtrinity_tasks.sources.staging import unpack
try:
    unpack(sys.argv[1], sys.argv[2])
except MedtrinityError as exc:
    print(exc)
print(next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:")))
"""
"""Unpacks in a process of its own and prints the error and the process's peak resident memory: VmHWM,
not ru_maxrss, which Linux carries over exec from the forking test process (a GiB with the models loaded)."""


def _deflate_zeros(out, head: bytes = b"", tail: bytes = b"") -> int:
    """Write the raw deflate stream of ``head``, 1 GiB of zeros and ``tail``; returns its CRC-32. After
    a full flush every 16 MiB of zeros compresses to the same bytes, so they are compressed once."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    out.write(compressor.compress(head) + compressor.flush(zlib.Z_FULL_FLUSH))
    block, crc = compressor.compress(ZEROS) + compressor.flush(zlib.Z_FULL_FLUSH), zlib.crc32(head)
    for _ in range(BOMB // len(ZEROS)):
        out.write(block)
        crc = zlib.crc32(ZEROS, crc)
    out.write(compressor.compress(tail) + compressor.flush())
    return zlib.crc32(tail, crc)


def _tar_gz_bomb(path):
    member = tarfile.TarInfo("zeros.bin")
    member.size = BOMB
    head, tail = member.tobuf(tarfile.USTAR_FORMAT), b"\0" * tarfile.RECORDSIZE  # the end-of-archive blocks
    with open(path, "wb") as out:
        out.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff")
        crc = _deflate_zeros(out, head, tail)
        out.write(struct.pack("<II", crc, (len(head) + BOMB + len(tail)) & 0xFFFFFFFF))


def _zip_bomb(path):
    name = b"zeros.bin"
    with open(path, "wb") as out:  # flag 8: the CRC and sizes follow the data, in a data descriptor
        # version, flags, method, time, date (1980-01-01), CRC and sizes (in the descriptor), name and extra lengths
        out.write(struct.pack("<4s5H3I2H", b"PK\x03\x04", 20, 8, zipfile.ZIP_DEFLATED, 0, 0x21, 0, 0, 0, len(name), 0))
        out.write(name)
        crc = _deflate_zeros(out)
        compressed = out.tell() - 30 - len(name)
        out.write(struct.pack("<4s3I", b"PK\x07\x08", crc, compressed, BOMB))
        directory = out.tell()
        # made by, version, flags, method, time, date, CRC, sizes, lengths, disk, attributes, local header offset
        entry = (20, 20, 8, zipfile.ZIP_DEFLATED, 0, 0x21, crc, compressed, BOMB, len(name), 0, 0, 0, 0, 0, 0)
        out.write(struct.pack("<4s6H3I5H2I", b"PK\x01\x02", *entry) + name)
        out.write(struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, 1, 1, out.tell() - directory, directory, 0))


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_an_archive_bomb_stops_early_in_bounded_memory(kind, destination, tmp_path):
    archive = tmp_path / f"bomb.{kind}"
    (_zip_bomb if kind == "zip" else _tar_gz_bomb)(archive)
    assert archive.stat().st_size < 2 << 20
    env = {**os.environ, "MEDTRINITY_ARCHIVE_MAX_RATIO": "200"}
    child = subprocess.run(
        [sys.executable, "-c", UNPACK_AND_MEASURE, str(archive), str(destination)],
        env=env, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    error, peak = child.stdout.splitlines()
    assert error.startswith(
        f"archive bomb.{kind} unpacks to more than 200 times its size (MEDTRINITY_ARCHIVE_MAX_RATIO): "
        "stopped at member 'zeros.bin' after "
    )
    assert int(peak) < 300 << 20
    assert sum(_files(destination).values()) < 1 << 20  # the member being written is removed
    _nothing_outside(destination, archive)


def test_member_count_and_total_size_limits_stop_the_unpack(destination, tmp_path):
    _tar(archive := tmp_path / "many.tar.gz", [_info(f"f{i}") for i in range(5)], {f"f{i}": b"x" for i in range(5)})
    message = (
        r"archive many.tar.gz holds more than 3 members \(MEDTRINITY_ARCHIVE_MAX_MEMBERS\): stopped at member 'f3'"
    )
    with pytest.raises(MedtrinityError, match=message):
        unpack(archive, destination, load_settings({"MEDTRINITY_ARCHIVE_MAX_MEMBERS": "3"}))
    assert sorted(_files(destination)) == ["f0", "f1", "f2"]

    big = {"a.bin": os.urandom(600 << 10), "b.bin": os.urandom(600 << 10)}
    _tar(archive := tmp_path / "big.tar", [_info(name) for name in big], big, mode="w")
    message = (
        r"big.tar unpacks to more than 0.001 GiB \(MEDTRINITY_ARCHIVE_MAX_GB\): stopped at member 'b.bin' after 1.2 MiB"
    )
    with pytest.raises(MedtrinityError, match=message):
        unpack(archive, destination / "big", load_settings().with_changes(archive_max_gb=0.001))
    assert _files(destination / "big") == {"a.bin": 600 << 10}


def test_unpack_command_stages_into_the_entry_location(hostile_tar, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MEDTRINITY_DATA_DIR", str(tmp_path / "staged"))
    assert main(["sources", "unpack", "deeplesion", str(hostile_tar)]) == 1  # something was refused
    out = capsys.readouterr().out
    assert "1 files extracted to" in out and "refused '../escaped.txt': member path leaves" in out
    assert (tmp_path / "staged" / "deeplesion" / "Images_png" / "000001_01_01" / "109.png").exists()


def test_unpack_command_shortens_long_names_and_prints_a_stop_as_one_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MEDTRINITY_DATA_DIR", str(tmp_path / "staged"))
    _tar(archive := tmp_path / "long.tar.gz", [_info("/" + "a" * 4000), _info("ok"), _info("more")], {})
    assert main(["sources", "unpack", "deeplesion", str(archive)]) == 1
    refusal = next(line for line in capsys.readouterr().out.splitlines() if "refused '/" in line)
    assert refusal == f"  refused '/{'a' * 196}...': {LEAVES}"

    monkeypatch.setenv("MEDTRINITY_ARCHIVE_MAX_MEMBERS", "2")
    assert main(["sources", "unpack", "deeplesion", str(archive)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["medtrinity: error: archive long.tar.gz holds more than 2 members (MEDTRINITY_ARCHIVE_MAX_MEMBERS): "
                   "stopped at member 'more' after 0 bytes"]  # fmt: skip


def test_not_an_archive_is_a_clear_error(tmp_path):
    (path := tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(MedtrinityError, match="is not a tar or zip archive"):
        unpack(path, tmp_path / "out")
