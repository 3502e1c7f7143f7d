"""The bounded tar reader: every declared size is checked before the bytes it announces are read or inflated."""

from __future__ import annotations

import io
import struct
import tarfile
import time
import tracemalloc

import pytest

from adapters.archive import MAX_NAME_BYTES, ArchiveLimits, unpack_archive
from adapters.errors import InvalidAdapterError
from adapters.tar_reader import entries
from tests.adapters.conftest import extended_header_bomb, tar_bytes, zip_bytes

LIMITS = ArchiveLimits(max_total_bytes=1 << 20, max_members=8)


def refused(data: bytes, tmp_path, limits: ArchiveLimits = LIMITS) -> InvalidAdapterError:
    with pytest.raises(InvalidAdapterError) as caught:
        unpack_archive(data, tmp_path / "out", limits)
    return caught.value


def tar_in_format(members: dict[str, bytes], tar_format: int, pax: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tar_format) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.pax_headers = pax or {}
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.mark.parametrize("kind", [tarfile.GNUTYPE_LONGNAME, tarfile.XHDTYPE, tarfile.XGLTYPE,
                                  tarfile.GNUTYPE_LONGLINK])
def test_an_extended_header_declaring_512_mib_is_refused_before_it_is_inflated(tmp_path, kind):
    data = extended_header_bomb(512 << 20, 8 << 20, kind)  # the real attack inflates the whole 512 MiB
    tracemalloc.start()
    started = time.monotonic()
    error = refused(data, tmp_path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert error.status == 413 and error.field == "archive" and "65536" in error.message
    assert peak < 4 << 20 and time.monotonic() - started < 1


def test_many_small_extended_headers_share_one_budget(tmp_path):
    long_name = "top/" + "n" * 900
    members = {f"{long_name}{i}": b"" for i in range(8)}  # 8 members, each with a 1 KiB+ long-name header
    limits = ArchiveLimits(max_total_bytes=1 << 20, max_members=8, max_header_bytes=4096)
    error = refused(tar_in_format(members, tarfile.GNU_FORMAT), tmp_path, limits)
    assert error.status == 413 and "at most 4096" in error.message


@pytest.mark.parametrize("tar_format", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_long_names_in_either_format_unpack(tmp_path, tar_format):
    folder = "f" * 150  # beyond ustar's 100-byte name field: a GNU long name or PAX path carries it
    data = tar_in_format({f"{folder}/adapter_config.json": b"{}", f"{folder}/w": b"x" * 700}, tar_format)
    assert unpack_archive(data, tmp_path / "out", LIMITS) == ["adapter_config.json", "w"]
    assert (tmp_path / "out" / "w").read_bytes() == b"x" * 700


def test_the_entries_are_listed_without_their_data_being_read():
    data = tar_bytes({"a": b"1" * 600, "b": b"", "c": b"3"})
    listed = list(entries(io.BytesIO(data), 1 << 16))
    assert [(e.name, e.size, e.offset) for e in listed] == [("a", 600, 512), ("b", 0, 2048), ("c", 1, 2560)]


def test_a_pax_size_is_honoured_and_a_lie_is_refused(tmp_path):
    honest = tar_in_format({"a": b"x" * 10}, tarfile.PAX_FORMAT, {"size": "10"})
    assert unpack_archive(honest, tmp_path / "ok", LIMITS) == ["a"]
    lying = tar_in_format({"a": b"x" * 10}, tarfile.PAX_FORMAT, {"size": "50000"})  # past the end of the stream
    assert refused(lying, tmp_path).field == "archive"


@pytest.mark.parametrize("key, value", [("linkpath", "/etc/passwd"), ("GNU.sparse.map", "0,10"),
                                        ("size", "-1"), ("size", "1e9")])
def test_pax_keys_that_change_what_a_member_is_are_refused(tmp_path, key, value):
    error = refused(tar_in_format({"a": b"x"}, tarfile.PAX_FORMAT, {key: value}), tmp_path)
    assert error.field == "archive" and error.status == 400


def test_a_member_whose_data_is_cut_short_is_refused(tmp_path):
    data = tar_bytes({"a": b"x" * 5000})
    assert refused(data[:3000], tmp_path).field == "archive"


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
