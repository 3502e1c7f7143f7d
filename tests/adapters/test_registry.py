"""The registry: versions, visibility per tenant, deletes with blob collection, bindings, persistence, crashes."""

from __future__ import annotations

import json
import os
import re
from concurrent.futures import ThreadPoolExecutor

import pytest

from adapters.errors import AdapterNotFoundError, InvalidAdapterError
from adapters.record import AdapterRecord, decode_record, encode_record
from adapters.registry import TOUCH_INTERVAL_S
from kvcache.fingerprint import adapter_id
from tests.adapters.conftest import BASE, archive_of, files_of, tar_bytes, zip_bytes

GOLDEN = (b'{"alpha":16,"base_fingerprint":"fp","bytes":1234,"created_at":1700000000.5,"last_used_at":1700000001.0,'
          b'"name":"support-bot","owner":"acme","rank":8,"sha256":"' + b"ab" * 32 + b'","target_modules":["q_proj",'
          b'"v_proj"],"v":1,"version":3}')


def golden_record() -> AdapterRecord:
    return AdapterRecord("support-bot", 3, "acme", "fp", 8, 16, ("q_proj", "v_proj"), 1234, "ab" * 32,
                         1_700_000_000.5, 1_700_000_001.0)


def test_the_record_format_is_pinned():
    assert encode_record(golden_record()) == GOLDEN
    assert decode_record(GOLDEN) == golden_record()
    with pytest.raises(ValueError, match="format version"):
        decode_record(GOLDEN.replace(b'"v":1', b'"v":2'))


def test_engine_names_are_plain_and_unique_per_owner_and_version():
    record = golden_record()
    assert re.fullmatch(r"support-bot\.v3\.[0-9a-f]{12}", record.engine_name)
    others = {AdapterRecord(*[getattr(record, f) for f in ("name", "version")], owner, "fp", 8, 16, (), 0,
                            "ab" * 32, 0, 0).engine_name for owner in ("acme", "other", None)}
    assert len(others) == 3 and record.engine_name in others
    assert record.kv_adapter_id == f"support-bot@{'ab' * 32}" and record.reference == "support-bot@v3"


def blobs(registry_root) -> list[str]:
    return sorted(os.listdir(registry_root / "blobs"))


def test_an_upload_becomes_version_one_in_a_content_addressed_blob(registry, peft_adapters, clock, tmp_path):
    record = registry.register_archive(archive_of(peft_adapters["qv"], "tgz", "out"), "support", "acme")
    assert (record.name, record.version, record.owner, record.base_fingerprint) == ("support", 1, "acme", BASE)
    assert (record.rank, record.alpha, record.target_modules) == (8, 16, ("q_proj", "v_proj"))
    assert record.created_at == record.last_used_at == clock.now
    path = registry.path_of(record)
    assert path == tmp_path / "registry" / "blobs" / record.sha256
    assert sorted(files_of(path)) == ["adapter_config.json", "adapter_model.safetensors"]
    assert record.kv_adapter_id == adapter_id("support", path) == adapter_id("support", peft_adapters["qv"])
    assert record.bytes == sum(p.stat().st_size for p in path.iterdir())
    assert os.listdir(tmp_path / "registry" / "staging") == []


def test_each_upload_is_a_new_version_and_identical_content_shares_the_blob(registry, peft_adapters, tmp_path):
    first = registry.register_archive(archive_of(peft_adapters["qv"]), "support", "acme")
    second = registry.register_archive(archive_of(peft_adapters["mlp"]), "support", "acme")
    third = registry.register_directory(peft_adapters["qv"], "support", "acme")
    assert [r.version for r in registry.versions("support", "acme")] == [1, 2, 3]
    assert third.sha256 == first.sha256 != second.sha256
    assert blobs(tmp_path / "registry") == sorted({first.sha256, second.sha256})
    assert registry.resolve("support", "acme") == third
    assert registry.resolve("support", "acme", 2) == registry.resolve("support@v2", "acme") == second
    assert len({first.engine_name, second.engine_name, third.engine_name}) == 3
    with pytest.raises(AdapterNotFoundError) as caught:
        registry.resolve("support@v4", "acme")
    assert caught.value.status == 404 and caught.value.field == "version"


def test_tenants_see_their_own_and_public_adapters_only(registry, peft_adapters):
    data = archive_of(peft_adapters["qv"])
    own = registry.register_archive(data, "support", "acme")
    public = registry.register_archive(archive_of(peft_adapters["mlp"]), "shared", "admin", public=True)
    assert public.owner is None and public.is_public
    for tenant in ("acme", "globex"):
        assert registry.resolve("shared", tenant) == public
    assert registry.list("acme") == [own, public] and registry.list("globex") == [public]
    with pytest.raises(AdapterNotFoundError) as caught:
        registry.resolve("support", "globex")
    hidden = caught.value
    with pytest.raises(AdapterNotFoundError) as caught:
        registry.resolve("never-existed", "globex")
    assert (hidden.status, hidden.message.replace("support", "X")) == (404, caught.value.message.replace(
        "never-existed", "X"))  # another tenant's adapter looks exactly like a missing one
    for action in (lambda: registry.versions("support", "globex"), lambda: registry.delete("support", "globex"),
                   lambda: registry.bind("globex", "support")):
        with pytest.raises(AdapterNotFoundError):
            action()
    assert registry.resolve("support", "acme") == own


def test_an_own_adapter_shadows_a_public_one_of_the_same_name(registry, peft_adapters):
    public = registry.register_archive(archive_of(peft_adapters["qv"]), "helper", "admin", public=True)
    own = registry.register_archive(archive_of(peft_adapters["mlp"]), "helper", "acme")
    assert registry.resolve("helper", "acme") == own and registry.resolve("helper", "globex") == public
    assert own.version == public.version == 1 and own.engine_name != public.engine_name
    assert registry.list("acme") == [own, public]


def test_delete_removes_versions_and_collects_unreferenced_blobs(registry, peft_adapters, tmp_path):
    root = tmp_path / "registry"
    v1 = registry.register_archive(archive_of(peft_adapters["qv"]), "support", "acme")
    v2 = registry.register_archive(archive_of(peft_adapters["mlp"]), "support", "acme")
    other = registry.register_archive(archive_of(peft_adapters["qv"]), "copy", "globex")
    assert registry.delete("support", "acme", version=2) == [v2]
    assert blobs(root) == [v1.sha256] and registry.resolve("support", "acme") == v1
    assert registry.delete("support", "acme") == [v1]
    assert blobs(root) == [other.sha256]  # still referenced by globex's copy
    with pytest.raises(AdapterNotFoundError):
        registry.resolve("support", "acme")
    with pytest.raises(AdapterNotFoundError):
        registry.delete("support", "acme")
    assert registry.register_archive(archive_of(peft_adapters["qv"]), "support", "acme").version == 3
    registry.delete("copy", "globex")
    registry.delete("support", "acme")
    assert blobs(root) == [] and os.listdir(root / "staging") == []


def test_public_adapters_are_deleted_only_as_public(registry, peft_adapters):
    public = registry.register_archive(archive_of(peft_adapters["qv"]), "shared", "admin", public=True)
    with pytest.raises(AdapterNotFoundError):
        registry.delete("shared", "acme")
    assert registry.delete("shared", "admin", public=True) == [public]
    assert registry.list("acme") == []


def test_bindings_prefer_the_user_then_the_tenant(registry, peft_adapters):
    tenant_default = registry.register_archive(archive_of(peft_adapters["qv"]), "default", "acme")
    personal = registry.register_archive(archive_of(peft_adapters["mlp"]), "personal", "acme")
    public = registry.register_archive(archive_of(peft_adapters["regex"]), "shared", "admin", public=True)
    assert registry.binding_for("acme", "alice") is None
    assert registry.bind("acme", "default") == tenant_default
    registry.bind("acme", "personal", user="alice@example.com")
    registry.bind("globex", "shared")
    assert registry.binding_for("acme", "alice@example.com") == personal
    assert registry.binding_for("acme", "bob") == registry.binding_for("acme") == tenant_default
    assert registry.binding_for("globex", "bob") == public and registry.binding_for("initech") is None
    assert registry.unbind("acme", user="alice@example.com") and not registry.unbind("acme", user="alice@example.com")
    assert registry.binding_for("acme", "alice@example.com") == tenant_default
    with pytest.raises(InvalidAdapterError) as caught:
        registry.bind("acme", "default", user="bad user")
    assert caught.value.field == "user"


def test_a_binding_follows_the_latest_version_unless_pinned(registry, peft_adapters):
    v1 = registry.register_archive(archive_of(peft_adapters["qv"]), "support", "acme")
    registry.bind("acme", "support")
    registry.bind("acme", "support@v1", user="alice")
    v2 = registry.register_archive(archive_of(peft_adapters["mlp"]), "support", "acme")
    assert registry.binding_for("acme") == v2 and registry.binding_for("acme", "alice") == v1
    registry.delete("support", "acme", version=1)
    assert registry.binding_for("acme", "alice") == v2  # the user's binding is dangling: the tenant's applies
    registry.delete("support", "acme")
    assert registry.binding_for("acme", "alice") is None and registry.binding_for("acme") is None


def test_everything_survives_a_reopen(open_registry, peft_adapters, clock):
    registry = open_registry()
    v1 = registry.register_archive(archive_of(peft_adapters["qv"]), "support", "acme")
    v2 = registry.register_archive(archive_of(peft_adapters["mlp"]), "support", "acme")
    public = registry.register_archive(archive_of(peft_adapters["regex"]), "shared", "admin", public=True)
    registry.bind("acme", "support@v1", user="alice")
    clock.now += TOUCH_INTERVAL_S
    touched = registry.touch(v2)
    registry.close()
    reopened = open_registry()
    assert reopened.versions("support", "acme") == [v1, touched] and touched.last_used_at == clock.now
    assert reopened.list("globex") == [public] and reopened.binding_for("acme", "alice") == v1
    assert reopened.register_archive(archive_of(peft_adapters["qv"]), "support", "acme").version == 3


def test_touch_is_stored_at_most_once_per_interval(registry, peft_adapters, clock):
    record = registry.register_archive(archive_of(peft_adapters["qv"]), "support", "acme")
    clock.now += TOUCH_INTERVAL_S / 2
    assert registry.touch(record) == record == registry.resolve("support", "acme")
    clock.now += TOUCH_INTERVAL_S
    touched = registry.touch(record)
    assert touched.last_used_at == clock.now and registry.resolve("support", "acme") == touched
    registry.delete("support", "acme")
    clock.now += TOUCH_INTERVAL_S
    assert registry.touch(touched) == touched  # a deleted record is not resurrected


def test_another_base_model_hides_records_without_losing_them(open_registry, peft_adapters, tmp_path):
    first = open_registry()
    record = first.register_archive(archive_of(peft_adapters["qv"]), "support", "acme")
    first.bind("acme", "support")
    first.close()
    changed = open_registry("base-fingerprint-2")
    assert changed.list("acme") == [] and changed.binding_for("acme") is None
    with pytest.raises(AdapterNotFoundError):
        changed.resolve("support", "acme")
    assert changed.register_archive(archive_of(peft_adapters["qv"]), "support", "acme").version == 2
    changed.close()
    assert blobs(tmp_path / "registry") == [record.sha256]
    assert open_registry().versions("support", "acme") == [record]


def bad_uploads(adapters) -> dict[str, bytes]:
    good = files_of(adapters["qv"])
    config = json.loads(good["adapter_config.json"])
    return {
        "traversal": zip_bytes({**good, "../x": b"evil"}),
        "absolute": tar_bytes({**good, "/tmp/x": b"evil"}),
        "pickle": zip_bytes({**good, "adapter_model.bin": b"\x80\x04"}),
        "rank": archive_of(adapters["rank16"]),
        "unknown_target": zip_bytes({**good, "adapter_config.json": json.dumps(
            {**config, "target_modules": ["wq"]}).encode()}),
        "bad_json": zip_bytes({**good, "adapter_config.json": b"{"}),
        "missing": zip_bytes({"adapter_config.json": good["adapter_config.json"]}),
        "late_failure": zip_bytes({**good, "zzz": b"x" * 10_000}),  # refused by validation, after unpacking
        "not_archive": b"hello" * 100,
    }


@pytest.mark.parametrize("kind", ["traversal", "absolute", "pickle", "rank", "unknown_target", "bad_json",
                                  "missing", "late_failure", "not_archive"])
def test_a_refused_upload_leaves_no_trace(registry, peft_adapters, tmp_path, kind):
    existing = registry.register_archive(archive_of(peft_adapters["mlp"]), "support", "acme")
    with pytest.raises(InvalidAdapterError):
        registry.register_archive(bad_uploads(peft_adapters)[kind], "support", "acme")
    root = tmp_path / "registry"
    assert registry.versions("support", "acme") == [existing] and registry.list("acme") == [existing]
    assert blobs(root) == [existing.sha256] and os.listdir(root / "staging") == []
    assert not (tmp_path / "x").exists() and not (root / "x").exists()


def test_an_oversize_upload_is_refused_with_413(open_registry, peft_adapters, tmp_path):
    registry = open_registry(max_upload_bytes=10_000)
    with pytest.raises(InvalidAdapterError) as caught:
        registry.register_archive(archive_of(peft_adapters["qv"]), "support", "acme")
    assert (caught.value.status, caught.value.field) == (413, "archive")
    with pytest.raises(InvalidAdapterError) as caught:
        registry.register_archive(tar_bytes({"adapter_model.safetensors": bytes(1 << 20)}, gzip=True), "s", "acme")
    assert caught.value.status == 413 and registry.list("acme") == []


@pytest.mark.parametrize("name, tenant, field", [("../etc", "acme", "name"), ("ok", "a/b", "tenant"),
                                                 ("ok", "", "tenant"), ("a" * 65, "acme", "name")])
def test_bad_names_and_tenants_are_refused_before_anything_is_read(registry, name, tenant, field):
    with pytest.raises(InvalidAdapterError) as caught:
        registry.register_archive(b"", name, tenant)
    assert caught.value.field == field and caught.value.status == 400


def test_open_removes_the_traces_of_a_crash(open_registry, peft_adapters, tmp_path):
    registry = open_registry()
    record = registry.register_archive(archive_of(peft_adapters["qv"]), "support", "acme")
    registry.close()
    root = tmp_path / "registry"
    (root / "staging" / "tmp123" / "upload").mkdir(parents=True)
    (root / "blobs" / ("cd" * 32)).mkdir()  # renamed into place, record never committed
    (root / "blobs" / ".new-x").mkdir()  # half built
    reopened = open_registry()
    assert blobs(root) == [record.sha256] and os.listdir(root / "staging") == []
    assert reopened.resolve("support", "acme") == record


def test_concurrent_uploads_get_distinct_versions(registry, peft_adapters):
    data = [archive_of(peft_adapters[kind]) for kind in ("qv", "mlp", "regex")] * 3
    with ThreadPoolExecutor(max_workers=9) as pool:
        futures = [pool.submit(registry.register_archive, payload, "support", "acme") for payload in data]
        results = [future.result().version for future in futures]
    assert sorted(results) == list(range(1, 10))
    assert len(blobs(registry.path_of(registry.resolve("support", "acme")).parent.parent)) == 3
