"""The directory digest's bytes are pinned: KV namespaces and adapter records on disk depend on them."""

from __future__ import annotations

import hashlib

from memcore.digest import ADAPTER_TAG, adapter_digest, file_digest, hash_weights_directory

CONFIG = '{"r": 8, "lora_alpha": 16, "target_modules": ["q_proj"], "\u00e9": [1, 2.5]}'
# computed by the code this module replaced (kvcache.fingerprint before memcore existed)
ADAPTER_GOLDEN = "224ae4073dd2990798cb3df0a442a223972870a83cc7fe0855d1d9525fc90a02"
MODEL_GOLDEN = "554ed58239e9be22f6862fe0affef9e5"


def weights_directory(directory):
    """Weights at two depths, names that sort differently as paths and as strings, and files that do not count."""
    (directory / "sub").mkdir(parents=True)
    (directory / "a").mkdir()
    (directory / "adapter_config.json").write_text(CONFIG, encoding="utf-8")
    (directory / "config.json").write_text(CONFIG, encoding="utf-8")
    (directory / "adapter_model.safetensors").write_bytes(bytes(range(256)) * 3)
    (directory / "a-b.safetensors").write_bytes(b"dash")
    (directory / "a" / "b.safetensors").write_bytes(b"slash")
    (directory / "sub" / "w.bin").write_bytes(b"\x00" * 10)
    (directory / "README.md").write_text("ignored")
    (directory / "notes.txt").write_bytes(b"ignored too")
    return directory


def test_the_adapter_and_model_digests_are_pinned(tmp_path):
    directory = weights_directory(tmp_path / "weights")
    assert adapter_digest(directory) == ADAPTER_GOLDEN
    model = hashlib.blake2b(digest_size=16, person=b"msc-model-v1")
    hash_weights_directory(model, directory, "config.json")
    assert model.hexdigest() == MODEL_GOLDEN


def test_the_hashed_bytes_are_the_canonical_config_then_each_weight_file_in_path_order(tmp_path):
    directory = weights_directory(tmp_path / "weights")
    expected = hashlib.sha256(ADAPTER_TAG)
    expected.update(b'{"lora_alpha":16,"r":8,"target_modules":["q_proj"],"\\u00e9":[1,2.5]}')
    for name in ("a/b.safetensors", "a-b.safetensors", "adapter_model.safetensors", "sub/w.bin"):
        expected.update(name.encode() + b"\0" + file_digest(directory / name).encode())
    assert adapter_digest(directory) == expected.hexdigest()
    assert file_digest(directory / "a-b.safetensors") == hashlib.blake2b(b"dash", digest_size=32).hexdigest()


def test_a_cached_file_digest_is_used_and_the_path_never_counts(tmp_path):
    first = weights_directory(tmp_path / "one")
    seen = []

    def cached(path):
        seen.append(path.relative_to(first).as_posix())
        return file_digest(path)

    assert adapter_digest(first, cached) == ADAPTER_GOLDEN
    assert seen == ["a/b.safetensors", "a-b.safetensors", "adapter_model.safetensors", "sub/w.bin"]
    assert adapter_digest(weights_directory(tmp_path / "elsewhere" / "two")) == ADAPTER_GOLDEN
