"""The live-stream engine benchmark runs end to end on the tiny checkpoint (a smoke test; timings are not checked)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="torch is needed for the Gemma 4 engine benchmark (pip install '.[gemma]')")

from patchstream.bench import gemma4_engine_bench  # noqa: E402
from patchstream.model import gemma4_engine  # noqa: E402
from patchstream.model.gemma4_batch import generate_detached  # noqa: E402


def test_bench_prints_a_row_per_stream_count_and_media(capsys):
    threads = torch.get_num_threads()
    try:  # one thread: on a busy 2-core machine OpenMP spin-waits make this 30x slower
        gemma4_engine_bench.main(["--streams", "1", "2", "--media-s", "1.2", "--threads", "1", "--decode-tokens", "4"])
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| 1 ") or line.startswith("| 2 ")]
    assert len(rows) == 4 and "largest N in real time" in out and "batch-1 decode" in out
    assert all("nan" not in row for row in rows)  # every stream had a caption decode to time
    assert gemma4_engine.generate_detached is generate_detached  # the timing wrapper is removed afterwards
