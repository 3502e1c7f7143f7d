"""The served-sidecar harness's failure path, on a real `memsidecar serve` that refuses its flags."""

from __future__ import annotations

import pytest

from bench.served import ServedSidecar


def test_a_sidecar_that_exits_at_start_raises_quoting_its_log(tmp_path):
    served = ServedSidecar(["--no-such-flag"], tmp_path / "sidecar.log")
    assert served.argv[1:4] == ["serve", "--port", str(served.port)]
    with pytest.raises(RuntimeError, match=r"sidecar exited with 2; the end of .*sidecar\.log:\n(.|\n)*no-such-flag"):
        with served:
            pass
    assert served.process.returncode == 2
