"""The bounded tar reader: every declared size is checked before the bytes it announces are read or inflated."""

from __future__ import annotations

import io
import tarfile
import time
import tracemalloc

import pytest

from adapters.archive import ArchiveLimits, unpack_archive
from adapters.errors import InvalidAdapterError
from adapters.tar_reader import entries
from tests.adapters.conftest import extended_header_bomb, tar_bytes

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
