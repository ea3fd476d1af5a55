"""`lalmbench bench` end to end on tiny sizes: every path runs, figures are written, the last line is the speedup."""

from __future__ import annotations

import json

import pytest
import torch

from lalmbench.bench import PATHS, TINY, run_bench


@pytest.mark.slow  # every path at tiny sizes: 88 s on 2 cores; test_a_compile_path_that_fails runs the machinery by default
def test_bench_tiny_writes_figures(tmp_path):
    lines: list[str] = []
    output = tmp_path / "bench.json"
    paths = [p for p in PATHS if p[0] in ("naive", "target_logits", "feature_cache", "bf16", "compile_exact")]
    results = run_bench(TINY, "cpu", output, paths=paths, compile_paths=True, echo=lines.append)
    saved = json.loads(output.read_text())
    assert set(saved["train"]) == {"naive", "target_logits", "feature_cache", "bf16", "compile_exact"}
    for figures in saved["train"].values():
        assert figures["steps_per_second"] > 0 and figures["peak_memory_bytes"] > 0
        assert figures["peak_memory_30s_bytes"] > 0  # the extra step on four 30 s clips
        assert len(figures["losses"]) == TINY["warmup_steps"] + TINY["measured_steps"]
    for name in ("target_logits", "feature_cache", "compile_exact"):  # fp32, deterministic, on the naive curve
        assert saved["train"][name]["exact"] and saved["train"][name]["max_loss_difference_vs_naive"] <= 1e-5
    assert not saved["train"]["bf16"]["exact"]
    assert saved["best_exact_path"] in ("target_logits", "feature_cache", "compile_exact")
    # the compiled path's first step built its graphs: reported, and left out of the rate
    compiled = saved["train"]["compile_exact"]
    assert 0 in compiled["compiling_steps"] and compiled["compiling_steps_seconds"] > 0
    assert compiled["measured_steps"] + sum(1 for s in compiled["compiling_steps"] if s >= TINY["warmup_steps"]) \
        == TINY["measured_steps"]
    assert saved["train"]["feature_cache"]["compiling_steps"] == []
    assert saved["train"]["feature_cache"]["cache"]["hit_rate"] == 1.0  # filled by the pass over the data
    # evaluation ran on the bf16 path's model: fp32 and bf16 KV cache, each also with LoRA merged
    assert set(saved["eval"]) == {"naive", "kv_cache", "kv_cache_merged_lora", "kv_cache_bf16",
                                  "kv_cache_bf16_merged_lora"}
    assert saved["eval"]["kv_cache"]["eval_clips"] == 5 and saved["eval"]["kv_cache"]["answers_agree_with_kv_cache"] == 1
    assert saved["eval"]["kv_cache_merged_lora"]["merged_lora"]
    assert saved["sizes"] == TINY and saved["torch"] and saved["device"].startswith("CPU")
    best_rate = saved["train"][saved["best_path"]]["steps_per_second"]
    assert saved["vs_published"]["train"] == pytest.approx(best_rate / 2.97)  # the published H200 figure
    assert lines[-1] == f"speedup: {results['speedup']:.2f}"


def test_bench_rejects_a_non_positive_step_count():
    from lalmbench.bench import bench_command
    from lalmbench.errors import ConfigError

    with pytest.raises(ConfigError, match="--steps: expected a positive number of measured steps, got 0"):
        bench_command(quick=True, device="cpu", measured_steps=0)


def test_a_compile_path_that_fails_is_reported_and_the_rest_stands(tmp_path, monkeypatch):
    from lalmbench.model.audio_llm import AudioLLM

    def no_compiler(self, mode="default", exact_random=True):
        raise RuntimeError("inductor: no C++ compiler found\nsecond line")

    monkeypatch.setattr(AudioLLM, "compile_training", no_compiler)
    lines: list[str] = []
    paths = [p for p in PATHS if p[0] in ("naive", "target_logits", "compile_exact")]
    results = run_bench(TINY, "cpu", tmp_path / "bench.json", paths=paths, compile_paths=True, echo=lines.append)
    assert results["failed"] == {"compile_exact": "RuntimeError: inductor: no C++ compiler found"}
    assert set(results["train"]) == {"naive", "target_logits"} and results["best_path"] == "target_logits"
    assert "kv_cache" in results["eval"]  # evaluation still ran, on the last path that trained
    assert any("compile_exact  failed: RuntimeError" in line for line in lines)
    streams = results["data_stream"]  # official's stream timed, the other's rate beside it
    assert (results["protocol"], streams["stream"], streams["other_stream"]) == ("official", "PublishedStream",
                                                                                 "TrainStream")
    assert f"TrainStream {streams['other_steps_per_second']:.1f} steps/s: x{streams['ratio_vs_other']:.2f}" in lines[2]
    assert lines[-1].startswith("speedup: ")


def test_bench_trains_and_times_the_protocols_stream(tmp_path, monkeypatch):
    """Under official a path trains on PublishedStream (what `lalmbench run` trains on) and the data figures
    time it first, with TrainStream's rate beside it from the same run; under corrected the other way."""
    from lalmbench.bench import time_data_streams, train_path, write_workload
    from lalmbench.data import mixture, official_stream
    from lalmbench.process_state import restored_process_state

    built: list[str] = []  # the streams constructed, in order

    def recorded(cls):
        original = cls.__init__

        def init(self, *args, **kwargs):
            built.append(cls.__name__)
            original(self, *args, **kwargs)
        return init

    for cls in (official_stream.PublishedStream, mixture.TrainStream):
        monkeypatch.setattr(cls, "__init__", recorded(cls))
    cpu = torch.device("cpu")
    train_data, _ = write_workload(tmp_path / "data", TINY["train_clips_per_task"], 1)
    streams = time_data_streams(train_data, TINY, cpu, "official", steps=2)
    assert built == ["PublishedStream", "TrainStream"]
    assert (streams["protocol"], streams["stream"], streams["other_stream"]) == ("official", "PublishedStream",
                                                                                 "TrainStream")
    assert streams["steps"] == 2 and streams["steps_per_second"] > 0 and streams["other_steps_per_second"] > 0
    assert streams["ratio_vs_other"] == pytest.approx(streams["steps_per_second"] / streams["other_steps_per_second"])

    built.clear()
    with restored_process_state():  # a path turns deterministic algorithms on, as run_bench does for itself only
        figures, _, config = train_path("naive", {}, TINY, train_data, cpu, tmp_path)
    assert config.protocol == "official" and built == ["PublishedStream"] and figures["steps_per_second"] > 0

    built.clear()
    corrected = time_data_streams(train_data, TINY, cpu, "corrected", steps=2)
    assert built == ["TrainStream", "PublishedStream"]
    assert (corrected["stream"], corrected["other_stream"]) == ("TrainStream", "PublishedStream")


def test_peak_memory_sees_what_a_block_allocates():
    from lalmbench.devices import PeakMemory

    with PeakMemory("cpu") as memory:
        held = torch.ones(2 ** 26)  # 256 MiB, written (so resident), held past the block
    assert memory.increase >= 0.95 * 2 ** 28 and memory.peak >= memory.start + memory.increase
    assert held.numel() == 2 ** 26
