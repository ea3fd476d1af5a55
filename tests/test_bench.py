"""`lalmbench bench` end to end on tiny sizes: every path runs, figures are written, the last line is the speedup."""

from __future__ import annotations

import json

from lalmbench.bench import PATHS, TINY, run_bench


def test_bench_tiny_writes_figures(tmp_path):
    lines: list[str] = []
    output = tmp_path / "bench.json"
    results = run_bench(TINY, "cpu", output, paths=PATHS[:3], compile_model=False, echo=lines.append)
    saved = json.loads(output.read_text())
    assert set(saved["train"]) == {"naive", "target_logits", "feature_cache"}
    for figures in saved["train"].values():
        assert figures["steps_per_second"] > 0 and figures["peak_memory_bytes"] > 0
        assert len(figures["losses"]) == TINY["warmup_steps"] + TINY["measured_steps"]
        assert figures["max_loss_difference_vs_naive"] < 1e-4  # all three paths here are exact
    assert saved["train"]["feature_cache"]["cache"]["hit_rate"] == 1.0  # filled by the pass over the data
    assert set(saved["eval"]) == {"naive", "kv_cache"}
    assert saved["eval"]["kv_cache"]["eval_clips"] == 5
    assert saved["sizes"] == TINY and saved["torch"] and saved["device"].startswith("CPU")
    assert lines[-1] == f"speedup: {results['speedup']:.2f}"
