"""The Gemma 4 benchmark script runs end to end on its tiny CPU config (a smoke test; timings are not checked)."""

from __future__ import annotations

import pytest

pytest.importorskip("torch", reason="torch is needed for the Gemma 4 benchmark (pip install '.[gemma]')")

from patchstream.bench import gemma4_bench  # noqa: E402
from patchstream.model.gemma4 import Gemma4Unified, gemma4_12b_config  # noqa: E402


def test_bench_prints_a_table_for_the_tiny_config(capsys):
    gemma4_bench.main(["--configs", "tiny", "--batches", "1,2", "--context", "24", "--chunk", "8", "--steps", "2",
                       "--no-compile"])
    out = capsys.readouterr().out
    assert "# command: python -m patchstream.bench.gemma4_bench --configs tiny" in out
    assert len([line for line in out.splitlines() if line.startswith("tiny ")]) == 2


def test_12b_kv_per_audio_minute_matches_the_spec():
    """Spec §10.2: 1,500 audio tokens -> 23 MiB on full layers + 320 MiB of sliding window = 343 MiB live."""
    import torch

    model = Gemma4Unified.on_meta(gemma4_12b_config()).to(torch.bfloat16)
    live = gemma4_bench.kv_bytes_per_audio_minute(model, rollback_slack=0)
    assert live == 1500 * 8 * 2048 + 1023 * 40 * 8192
    assert round(live / 2**20) == 343
    assert gemma4_bench.decode_weight_bytes(model) == 2 * (11_959_730_224 - 49_922_304 - 2_457_600)
