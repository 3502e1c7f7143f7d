"""Uploads unpack to a flat directory of regular files, or are refused naming the member at fault."""

from __future__ import annotations

import io
import os
import stat
import struct
import tarfile
import zipfile

import pytest

from adapters.archive import MAX_NAME_BYTES, ArchiveLimits, copy_directory, unpack_archive
from adapters.errors import InvalidAdapterError
from tests.adapters.conftest import archive_of, files_of, tar_bytes, zip_bytes

LIMITS = ArchiveLimits(max_total_bytes=1 << 20, max_members=8)
SMALL = {"adapter_config.json": b"{}", "adapter_model.safetensors": b"x" * 100}


def refused(data: bytes, tmp_path, limits: ArchiveLimits = LIMITS) -> InvalidAdapterError:
    with pytest.raises(InvalidAdapterError) as caught:
        unpack_archive(data, tmp_path / "out", limits)
    return caught.value


@pytest.mark.parametrize("kind", ["zip", "tar", "tgz"])
@pytest.mark.parametrize("folder", [None, "my-adapter"])
def test_each_format_unpacks_flat_with_the_top_folder_stripped(peft_adapters, tmp_path, kind, folder):
    data = archive_of(peft_adapters["qv"], kind, folder)
    names = unpack_archive(data, tmp_path / "out", LIMITS)
    assert names == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
    assert files_of(tmp_path / "out") == files_of(peft_adapters["qv"])


def test_directory_entries_of_the_top_folder_are_accepted(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("top/", b"")
        archive.writestr("top/a.json", b"{}")
    assert unpack_archive(buffer.getvalue(), tmp_path / "out", LIMITS) == ["a.json"]


def test_the_format_is_told_by_content_not_name(tmp_path):
    error = refused(b"not an archive at all" * 40, tmp_path)
    assert error.field == "archive" and error.status == 400 and ".zip, .tar or .tar.gz" in error.message


@pytest.mark.parametrize("name", ["../x", "a/../../x", "/etc/passwd", "C:/x", "a\\..\\x", "./x", "a//b"])
@pytest.mark.parametrize("pack", [zip_bytes, tar_bytes])
def test_escaping_names_are_refused(tmp_path, name, pack):
    error = refused(pack({"ok.json": b"{}", name: b"evil"}), tmp_path)
    assert error.field == name and error.status == 400
    assert not (tmp_path / "x").exists() and not (tmp_path.parent / "x").exists()


def tar_with(info: tarfile.TarInfo) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        archive.addfile(info)
    return buffer.getvalue()


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.BLKTYPE,
                                  tarfile.FIFOTYPE])
def test_tar_links_devices_and_fifos_are_refused(tmp_path, kind):
    info = tarfile.TarInfo("adapter_model.safetensors")
    info.type, info.linkname = kind, "/etc/passwd"
    error = refused(tar_with(info), tmp_path)
    assert error.field == "adapter_model.safetensors" and "links" in error.message


def test_zip_symlinks_are_refused(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        info = zipfile.ZipInfo("adapter_config.json")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(info, "/etc/passwd")
    error = refused(buffer.getvalue(), tmp_path)
    assert error.field == "adapter_config.json" and "links" in error.message


@pytest.mark.parametrize("pack", [zip_bytes, tar_bytes])
def test_too_many_members_are_refused(tmp_path, pack):
    error = refused(pack({f"f{i}": b"" for i in range(9)}), tmp_path)
    assert "at most 8" in error.message and error.status == 400


@pytest.mark.parametrize("pack", [zip_bytes, tar_bytes])
def test_a_member_over_its_limit_is_refused_with_413(tmp_path, pack):
    limits = ArchiveLimits(max_total_bytes=1000, max_member_bytes=100)
    error = refused(pack({"small": b"x" * 100, "big": b"x" * 101}), tmp_path, limits)
    assert error.field == "big" and error.status == 413


@pytest.mark.parametrize("pack", [zip_bytes, tar_bytes])
def test_the_total_over_its_limit_is_refused_with_413(tmp_path, pack):
    limits = ArchiveLimits(max_total_bytes=250)
    error = refused(pack({"a": b"x" * 100, "b": b"x" * 100, "c": b"x" * 100}), tmp_path, limits)
    assert error.field == "c" and error.status == 413 and "250 bytes" in error.message


def test_a_compression_bomb_is_refused_before_it_expands(tmp_path):
    data = tar_bytes({"adapter_model.safetensors": bytes(50 << 20)}, gzip=True)
    assert len(data) < 200_000
    error = refused(data, tmp_path)
    assert error.field == "adapter_model.safetensors" and error.status == 413
    assert not (tmp_path / "out").exists()


def test_a_zip_that_understates_a_size_is_refused(tmp_path):
    """The bytes are counted, not the header believed: a lie about the size breaks the checksum."""
    data = bytearray(zip_bytes({"a": b"x" * 5000}))
    central = data.rindex(b"PK\x01\x02")
    data[central + 24:central + 28] = (10).to_bytes(4, "little")
    error = refused(bytes(data), tmp_path)
    assert error.field == "archive" and "corrupt" in error.message


@pytest.mark.parametrize("members", [{"a/b/c.json": b"{}"}, {"a/x": b"", "b/y": b""}, {"a/x": b"", "y": b""}])
def test_nesting_and_mixed_layouts_are_refused(tmp_path, members):
    error = refused(zip_bytes(members), tmp_path)
    assert error.status == 400 and error.field in {"a/b/c.json", "b", "y"}


@pytest.mark.parametrize("name", ["a", "top/a"])
def test_duplicate_names_are_refused(tmp_path, name):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(name, b"1")
        with pytest.warns(UserWarning, match="Duplicate name"):
            archive.writestr(name, b"2")
    error = refused(buffer.getvalue(), tmp_path)
    assert "twice" in error.message


def test_corrupt_archives_are_refused(tmp_path):
    data = archive_of_small("tgz")
    assert refused(data[: len(data) // 2], tmp_path).field == "archive"


def archive_of_small(kind: str) -> bytes:
    return zip_bytes(SMALL) if kind == "zip" else tar_bytes(SMALL, gzip=kind == "tgz")


def test_a_local_directory_is_copied_by_the_same_rules(tmp_path, peft_adapters):
    assert copy_directory(peft_adapters["qv"], tmp_path / "out", LIMITS) == sorted(files_of(peft_adapters["qv"]))
    assert files_of(tmp_path / "out") == files_of(peft_adapters["qv"])


@pytest.mark.parametrize("make", ["symlink", "subdir", "fifo"])
def test_a_local_directory_with_links_or_subdirectories_is_refused(tmp_path, make):
    source = tmp_path / "source"
    source.mkdir()
    (source / "adapter_config.json").write_text("{}")
    if make == "symlink":
        (source / "adapter_model.safetensors").symlink_to("/etc/passwd")
    elif make == "subdir":
        (source / "adapter_model.safetensors").mkdir()
    else:
        os.mkfifo(source / "adapter_model.safetensors")
    with pytest.raises(InvalidAdapterError) as caught:
        copy_directory(source, tmp_path / "out", LIMITS)
    assert caught.value.field == "adapter_model.safetensors"


def test_a_local_directory_over_the_limit_is_refused(tmp_path, peft_adapters):
    with pytest.raises(InvalidAdapterError) as caught:
        copy_directory(peft_adapters["qv"], tmp_path / "out", ArchiveLimits(max_total_bytes=1000))
    assert caught.value.status == 413


@pytest.mark.parametrize("pack", [zip_bytes, tar_bytes])
def test_a_name_over_the_limit_is_refused_and_quoted_short(tmp_path, pack):
    error = refused(pack({"n" * (MAX_NAME_BYTES + 1): b""}), tmp_path)
    assert f"at most {MAX_NAME_BYTES} bytes" in error.message and len(error.field) < 130


def _with_end_record(data: bytes, entries_total: int | None = None, directory_bytes: int | None = None) -> bytes:
    end = data.rindex(b"PK\x05\x06")
    fields = list(struct.unpack_from("<4s4H2LH", data, end))
    fields[3] = fields[4] = entries_total if entries_total is not None else fields[4]
    fields[5] = directory_bytes if directory_bytes is not None else fields[5]
    return data[:end] + struct.pack("<4s4H2LH", *fields) + data[end + 22:]


def test_a_zip_declaring_too_many_entries_is_refused_before_parsing(tmp_path):
    error = refused(_with_end_record(zip_bytes({"a": b""}), entries_total=60_000), tmp_path)
    assert error.field == "archive" and "at most 8" in error.message


def test_a_zip_central_directory_larger_than_its_entries_need_is_refused(tmp_path):
    error = refused(_with_end_record(zip_bytes({"a": b""}), directory_bytes=50 << 20), tmp_path)
    assert error.status == 413 and "central directory" in error.message


def test_zip64_is_refused(tmp_path):
    error = refused(_with_end_record(zip_bytes({"a": b""}), entries_total=0xFFFF), tmp_path)
    assert "zip64" in error.message


def test_a_zip64_locator_before_a_small_end_record_is_refused(tmp_path):
    data = zip_bytes({"a": b""})
    end = data.rindex(b"PK\x05\x06")
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, 0, 1)  # zipfile would take the sizes from a zip64 record
    assert "zip64" in refused(data[:end] + locator + data[end:], tmp_path).message
