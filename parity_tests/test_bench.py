"""`framegen bench`: the report's schema and internal consistency, the FLOP count, the peak-memory probe, the CLI.

One tiny real run (torch-cpu and ort-cpu, fp32, batch 1 and 2, 2 timed calls each, 2-frame end-to-end renders) is
shared by the module. Nothing here asserts a speed: the numbers are checked against each other (fps from the timed
calls, GFLOP/s from fps and the FLOP count, percentiles in order), never against a clock.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT
from typer.testing import CliRunner

BATCHES = (1, 2)
ITERATIONS = 2
E2E_FRAMES = 2
STAGES = {"prepare", "infer", "paste", "encode"}


@pytest.fixture(scope="module")
def bench_cli(tmp_path_factory, generator_ckpt, runtime_bundle, synth_template_dir, parity_features_path):
    """``framegen bench`` run in process with --json: (report as written, stdout). ``runtime_bundle`` holds the
    ONNX export of the same calibrated generator as ``generator_ckpt``."""
    from framegen.toolkit.cli import app

    report_path = tmp_path_factory.mktemp("bench") / "report.json"
    args = ["bench", "--checkpoint", str(generator_ckpt), "--bundle", str(runtime_bundle),
            "--backends", "torch-cpu,ort-cpu", "--precisions", "fp32", "--batch", ",".join(map(str, BATCHES)),
            "--iterations", str(ITERATIONS), "--warmup", "0",
            "--e2e", "--template", str(synth_template_dir), "--features", str(parity_features_path),
            "--e2e-frames", str(E2E_FRAMES), "--json", str(report_path)]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.stdout
    return json.loads(report_path.read_text()), result.stdout


# ------------------------------------------------------------------------------------------- arithmetic

def test_flop_count_ave_is_9_77_gflop():
    from framegen.toolkit.bench.core import generator_flops

    assert generator_flops("ave") / 1e9 == pytest.approx(9.77, abs=0.01)


@pytest.mark.parametrize("mode", ["ave", "hubert", "wenet"])
def test_flop_count_matches_torch_flop_counter(mode):
    """An independent count: PyTorch's FlopCounterMode over the same forward pass (shapes only, meta device)."""
    import torch
    from framegen.models.unet import AUDIO_SHAPES, Model
    from framegen.toolkit.bench.core import generator_flops
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = Model(6, mode).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.empty(1, 6, 320, 320, device="meta"), torch.empty(1, *AUDIO_SHAPES[mode], device="meta"))
    assert generator_flops(mode) == counter.get_total_flops()


def test_bench_inputs_are_image_like_and_never_zero():
    from framegen.models.contract import MASK_COLS, MASK_ROWS
    from framegen.toolkit.bench.core import bench_inputs

    image, audio = bench_inputs("ave", 2)
    assert image.shape == (2, 6, 320, 320) and audio.shape == (2, 32, 16, 16)
    assert image.dtype == np.float32 and audio.dtype == np.float32
    ref, masked = image[:, :3], image[:, 3:]
    assert image.min() >= 0.0 and image.max() <= 1.0
    assert (ref > 0).mean() > 0.9 and ref.std() > 0.1  # textured, not flat
    assert np.all(masked[:, :, MASK_ROWS, MASK_COLS] == 0)
    outside = masked.copy()
    outside[:, :, MASK_ROWS, MASK_COLS] = ref[:, :, MASK_ROWS, MASK_COLS]
    np.testing.assert_array_equal(outside, ref)  # the masked copy differs only inside the mask
    assert audio.min() >= 0 and 0.2 < audio.mean() < 0.6
    assert not np.array_equal(image[0], image[1])  # each sample of a batch is its own


def test_peak_rss_sees_an_allocation():
    import mmap

    from framegen.toolkit.bench.core import PeakRss

    with PeakRss() as rss:
        # 200 MB of fresh pages, touched: np.ones could reuse memory earlier tests freed but the allocator kept
        # resident, and then nothing new would be resident at all.
        block = mmap.mmap(-1, 200 * 2**20)
        np.frombuffer(block, dtype=np.uint8)[::4096] = 1
        block.close()
    assert rss.peak_mb - rss.base_mb > 150, (rss.method, rss.base_mb, rss.peak_mb)


def test_latency_percentiles():
    from framegen.toolkit.bench.core import latency_summary

    s = latency_summary([0.001 * k for k in range(1, 101)])  # 1..100 ms
    assert s["min"] == 1.0 and s["max"] == 100.0 and s["mean"] == pytest.approx(50.5)
    assert s["p50"] == pytest.approx(50.5) and s["p90"] == pytest.approx(90.1) and s["p99"] == pytest.approx(99.01)


def test_machine_peak_estimates():
    from framegen.toolkit.bench.machine import cpu_flop_per_cycle, gpu_peak_tflops, peak_gflops

    zen4 = {"avx", "avx2", "fma", "avx512f"}
    assert cpu_flop_per_cycle(zen4, "AuthenticAMD", 0x19, "x86_64", "AMD EPYC")[0] == 32
    assert cpu_flop_per_cycle(zen4, "GenuineIntel", 6, "x86_64", "Intel Xeon Platinum")[0] == 64
    assert cpu_flop_per_cycle({"avx", "avx2", "fma"}, "GenuineIntel", 6, "x86_64", "")[0] == 32
    assert gpu_peak_tflops("NVIDIA H100 80GB HBM3") == (67.0, 989.0)
    assert gpu_peak_tflops("NVIDIA H100 PCIe") == (51.0, 756.0)  # not the SXM row
    assert gpu_peak_tflops("Some Future GPU") is None
    machine = {"cpu": {"peak_gflops_fp32": 100.0},
               "gpus": [{"index": 0, "peak_tflops_fp32": 67.0, "peak_tflops_fp16_tensor": 989.0}]}
    assert peak_gflops(machine, "cpu", "fp16") == 100.0
    assert peak_gflops(machine, "cuda:0", "fp16") == 989000.0
    assert peak_gflops(machine, "cuda:0", "fp32") == 67000.0
    assert peak_gflops(machine, "coreml", "fp16") is None


def test_describe_machine_here():
    from framegen.toolkit.bench.machine import describe_machine

    m = describe_machine()
    cpu = m["cpu"]
    assert 1 <= cpu["physical_cores"] <= cpu["logical_cores"] <= (os.cpu_count() or 1)
    if cpu["clock_mhz"] and "current" not in (cpu["clock_source"] or ""):
        assert cpu["peak_gflops_fp32"] == pytest.approx(
            cpu["physical_cores"] * cpu["clock_mhz"] / 1000 * cpu["flop_per_cycle_fp32"], rel=1e-3)
    else:  # a current clock is no ceiling (turbo): the peak is unknown and says so, never a figure under a rate
        assert cpu["peak_gflops_fp32"] is None and cpu["peak_note"].startswith("unknown")
    assert m["memory_gb"] > 0 and len(m["load"]["loadavg_1_5_15"]) == 3
    json.dumps(m)


# ------------------------------------------------------------------------------------------- the report

def test_report_schema(bench_cli):
    report, _ = bench_cli
    assert report["schema"] == 1
    assert set(report) >= {"machine", "model", "settings", "results", "skipped", "e2e", "load_after"}
    assert report["model"]["gflop_per_frame"] == {"ave": pytest.approx(9.7717, abs=1e-4)}
    got = sorted((r["backend"], r["precision"], r["batch"]) for r in report["results"])
    assert got == sorted((b, "fp32", n) for b in ("torch-cpu", "ort-cpu") for n in BATCHES)
    for r in report["results"]:
        assert set(r) >= {"backend", "precision", "batch", "latency_ms", "fps", "gflops", "peak_rss_mb",
                          "device_memory_mb", "iterations", "warmup", "peak_share"}
        assert r["iterations"] == ITERATIONS and r["warmup"] == 0 and r["device"] == "cpu"
        lat = r["latency_ms"]
        assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        # fps is frames over the timed calls' total; GFLOP/s follows from fps and the FLOP count
        assert r["fps"] == pytest.approx(r["batch"] * r["iterations"] / r["timed_seconds"], rel=1e-3)
        assert r["fps"] == pytest.approx(r["batch"] * 1000.0 / lat["mean"], rel=1e-3)
        assert r["gflops"] == pytest.approx(r["fps"] * 9.7717, rel=1e-2)
        if r["peak_gflops"]:
            assert r["peak_share"] == pytest.approx(r["gflops"] / r["peak_gflops"], rel=1e-2)
        assert r["peak_rss_mb"] >= r["rss_before_mb"] > 50  # a process holding a model
        assert r["device_memory_mb"] is None
        assert r["cpu_ms_per_frame"] > 0 and 0 < r["cores_busy"] <= (os.cpu_count() or 1) + 0.5


def test_report_same_model_same_output(bench_cli):
    """torch-cpu and the ONNX export ran the same generator on the same inputs: same mean output."""
    report, _ = bench_cli
    by = {(r["backend"], r["batch"]): r["output_mean"] for r in report["results"]}
    for n in BATCHES:
        assert by[("torch-cpu", n)] == pytest.approx(by[("ort-cpu", n)], abs=1e-3)
        assert 0.1 < by[("torch-cpu", n)] < 0.9  # calibrated model on image-like input: not saturated


def test_report_e2e(bench_cli, synth_template_dir):
    report, _ = bench_cli
    e2e = report["e2e"]
    assert e2e["template"] == str(synth_template_dir) and e2e["frames"] == E2E_FRAMES
    assert sorted(r["backend"] for r in e2e["runs"]) == ["ort-cpu", "torch-cpu"]
    model = {(r["backend"], r["batch"]): r["fps"] for r in report["results"]}
    for run in e2e["runs"]:
        assert run["frames"] == E2E_FRAMES and run["batch"] == 1 and (run["width"], run["height"]) == (1280, 720)
        assert run["fps"] == pytest.approx(run["frames"] / run["seconds"], rel=1e-2)
        assert set(run["stages"]) >= STAGES
        assert run["stages"]["infer"]["items"] == E2E_FRAMES  # batch 1: one call per frame
        assert run["stages"]["encode"]["items"] == E2E_FRAMES
        for st in run["stages"].values():
            assert st["seconds"] >= 0 and st["share"] == pytest.approx(st["seconds"] / run["seconds"], abs=1e-3)
        assert run["busiest_stage"] == max(run["stages"], key=lambda k: run["stages"][k]["seconds"])
        assert run["model_only_fps"] == model[(run["backend"], 1)]
        assert run["e2e_over_model_only"] == pytest.approx(run["fps"] / run["model_only_fps"], rel=1e-3)
        # The model alone in the render's layout: one request per render worker in flight, on the same backend.
        inflight = run["model_inflight"]
        assert inflight["workers"] >= 1 and inflight["frames"] >= 4 * inflight["workers"]
        assert inflight["fps"] == pytest.approx(inflight["frames"] / inflight["seconds"], rel=1e-2)
        assert run["e2e_over_model_inflight"] == pytest.approx(run["fps"] / inflight["fps"], rel=1e-3)
        assert run["out_bytes"] > 0 and run["cpu_ms_per_frame"] > 0


def test_cli_table(bench_cli):
    _, stdout = bench_cli
    assert "model only" in stdout and "end to end" in stdout
    assert stdout.count("torch-cpu") >= 3 and stdout.count("ort-cpu") >= 3  # 2 model rows + 1 e2e row each
    assert "GFLOP" in stdout and "render layout" in stdout


# ------------------------------------------------------------------------------------------- errors

def test_option_errors():
    from framegen.toolkit.bench.core import BenchError, parse_batches, plan, run_bench

    with pytest.raises(BenchError, match="--batch '1,x'"):
        parse_batches("1,x")
    with pytest.raises(BenchError, match="--batch '0'"):
        parse_batches("0")
    assert parse_batches("16, 1,4,1") == [1, 4, 16]
    with pytest.raises(BenchError, match="--checkpoint CKPT and/or --bundle DIR"):
        plan(None, None)
    with pytest.raises(BenchError, match="--precisions: 'fp8'"):
        plan("x.pth", None, ["torch-cpu"], ["fp8"])
    with pytest.raises(BenchError, match="needs both --template"):
        run_bench(checkpoint="x.pth", template="t")


def test_plan_skips_what_the_source_cannot_feed(generator_ckpt):
    from framegen.toolkit.bench.core import plan

    runs, skipped = plan(generator_ckpt, None, ["torch-cpu", "ort-cpu"])
    assert runs == [("torch-cpu", "fp32")]
    assert {s["backend"] for s in skipped} == {"ort-cpu"}  # ONNX backends need a bundle


def test_cli_error_exit_code_and_no_report(tmp_path, generator_ckpt):
    report = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-m", "framegen.toolkit.cli", "bench", "--checkpoint", str(generator_ckpt),
                           "--backends", "no-such-backend", "--json", str(report)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: unknown backend 'no-such-backend'")
    assert "Traceback" not in proc.stderr
    assert not report.exists() and not any(tmp_path.iterdir())
