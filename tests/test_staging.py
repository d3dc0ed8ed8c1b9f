"""Unpacking a provider's archives into a source directory: members that would escape it are
refused with their reason, and nothing is written outside."""

import io
import stat
import tarfile
import zipfile

import pytest

from medtrinity_tasks.cli import main
from medtrinity_tasks.errors import MedtrinityError
from medtrinity_tasks.sources.staging import unpack


def _tar(path, members: list[tarfile.TarInfo], data: dict[str, bytes]):
    with tarfile.open(path, "w:gz") as tar:
        for info in members:
            payload = data.get(info.name)
            if payload is not None:
                info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload) if payload is not None else None)


def _info(name: str, kind=tarfile.REGTYPE, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, target, 0o644
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


def test_unpack_command_stages_into_the_entry_location(hostile_tar, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MEDTRINITY_DATA_DIR", str(tmp_path / "staged"))
    assert main(["sources", "unpack", "deeplesion", str(hostile_tar)]) == 1  # something was refused
    out = capsys.readouterr().out
    assert "1 files extracted to" in out and "refused '../escaped.txt': member path leaves" in out
    assert (tmp_path / "staged" / "deeplesion" / "Images_png" / "000001_01_01" / "109.png").exists()


def test_not_an_archive_is_a_clear_error(tmp_path):
    (path := tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(MedtrinityError, match="is not a tar or zip archive"):
        unpack(path, tmp_path / "out")
