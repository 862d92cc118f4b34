"""Choose the ONNX exporter and opset by measurement: ``python scripts/measure_exporters.py [--json OUT]``.

For each candidate (TorchScript ``dynamo=False`` and ``torch.export``-based ``dynamo=True`` at several opsets) it
exports the calibrated seeded 'ave' generator twice and the audio encoder once, and measures, in order of weight:

1. correctness: max / mean abs error of the fp32 and fp16 artifacts against PyTorch at batch 3 on image-like inputs,
   and whether the two exports are byte-identical (reproducibility);
2. speed: ONNX Runtime latency at batch 1 on the CPU (and CUDA when a GPU is visible), median of interleaved runs so
   that a busy machine penalises every candidate alike;
3. export time.

Choice: among candidates whose fp32 errors are within the validation tolerance and whose exports are reproducible,
those whose CPU median is within the noise floor of the fastest are tied. The noise floor is measured, not assumed:
candidates that produce the *same graph* (the same exporter at different opsets often does) cannot differ in speed,
so the spread of their medians is what the machine's noise does to identical work (at least 5 %). Among tied
candidates the lowest opset wins (the widest range of runtimes can load it), then the faster export. The figures
are copied into :data:`framegen.exporters.onnx_export.EXPORT_CHOICE`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import time
from typing import Any

CANDIDATES: tuple[tuple[str, int], ...] = (
    ("torchscript", 13), ("torchscript", 17), ("torchscript", 20),
    ("dynamo", 18), ("dynamo", 20), ("dynamo", 23),
)


def _cuda_works() -> bool:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False
    try:
        import onnx
        from onnx import TensorProto, helper

        g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
        probe = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        onnx.checker.check_model(probe)
        s = ort.InferenceSession(probe.SerializeToString(), providers=["CUDAExecutionProvider"])
        return "CUDAExecutionProvider" in s.get_providers()
    except Exception:
        return False


def measure(candidates: tuple[tuple[str, int], ...] = CANDIDATES, rounds: int = 7) -> dict[str, Any]:
    """Export and measure every candidate; returns ``{candidates: [...], choice: {...}, machine: {...}}``."""
    import numpy as np
    import onnxruntime as ort
    import torch
    from framegen.exporters.onnx_export import encoder_onnx_model, generator_onnx_model, to_float16
    from framegen.models.init import init_audio_encoder, init_generator
    from framegen.toolkit.export.validate import TOLERANCES, validation_inputs

    gen = init_generator("ave", seed=0, calibrate=True)
    enc = init_audio_encoder(seed=0)
    image, audio = validation_inputs("generator", "ave", 3)
    (mel,) = validation_inputs("audio_encoder", "ave", 3)
    with torch.no_grad():
        ref = gen(torch.from_numpy(image), torch.from_numpy(audio)).numpy()
        eref = enc(torch.from_numpy(mel)).numpy()
    cuda = _cuda_works()
    providers = [["CPUExecutionProvider"]] + ([["CUDAExecutionProvider"]] if cuda else [])

    rows: list[dict[str, Any]] = []
    sessions: dict[tuple[int, str, str], Any] = {}
    for i, (exporter, opset) in enumerate(candidates):
        row: dict[str, Any] = {"exporter": exporter, "opset": opset}
        rows.append(row)
        try:
            t0 = time.perf_counter()
            fp32 = generator_onnx_model(gen, "fp32", opset, exporter)
            row["export_s"] = round(time.perf_counter() - t0, 1)
            again = generator_onnx_model(gen, "fp32", opset, exporter)
            enc32 = encoder_onnx_model(enc, "fp32", opset, exporter)
        except Exception as exc:  # a candidate that cannot export is a result, not a crash
            row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
            continue
        blobs = {"fp32": fp32.SerializeToString(), "fp16": to_float16(fp32).SerializeToString()}
        row["reproducible"] = blobs["fp32"] == again.SerializeToString()
        row["sha256_fp32"] = hashlib.sha256(blobs["fp32"]).hexdigest()
        row["graph_sha256"] = hashlib.sha256(fp32.graph.SerializeToString()).hexdigest()
        row["size_mb_fp32"] = round(len(blobs["fp32"]) / 1e6, 2)
        for prec, blob in blobs.items():
            s = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
            out = s.run(None, {"image": image, "audio": audio})[0]
            err = np.abs(out.astype(np.float64) - ref)
            row[f"max_err_{prec}"] = float(err.max())
            row[f"mean_err_{prec}"] = float(err.mean())
            for prov in providers:
                sessions[(i, prec, prov[0])] = ort.InferenceSession(blob, providers=prov)
        s = ort.InferenceSession(enc32.SerializeToString(), providers=["CPUExecutionProvider"])
        row["max_err_encoder_fp32"] = float(np.abs(s.run(None, {"mel": mel})[0] - eref).max())
        tol = TOLERANCES[("generator", "fp32")]
        row["correct"] = row["max_err_fp32"] <= tol.max_abs and row["mean_err_fp32"] <= tol.mean_abs

    # Interleaved timing: each round runs every candidate once, so load changes hit all of them.
    feeds = {"image": image[:1], "audio": audio[:1]}
    times: dict[tuple[int, str, str], list[float]] = {k: [] for k in sessions}
    for s in sessions.values():
        s.run(None, feeds)
    for _ in range(rounds):
        for key, s in sessions.items():
            t0 = time.perf_counter()
            s.run(None, feeds)
            times[key].append(time.perf_counter() - t0)
    for (i, prec, prov), ts in times.items():
        label = "cpu" if prov == "CPUExecutionProvider" else "cuda"
        rows[i][f"ms_b1_{label}_{prec}"] = round(1000 * statistics.median(ts), 1)

    noise = 0.05
    for graph in {r["graph_sha256"] for r in rows if "graph_sha256" in r}:
        same = [r["ms_b1_cpu_fp32"] for r in rows if r.get("graph_sha256") == graph]
        if len(same) > 1:
            noise = max(noise, (max(same) - min(same)) / min(same))
    ok = [r for r in rows if r.get("correct") and r.get("reproducible")]
    best = None
    if ok:
        fastest = min(r["ms_b1_cpu_fp32"] for r in ok)
        tied = [r for r in ok if r["ms_b1_cpu_fp32"] <= fastest * (1 + noise)]
        for r in ok:
            r["speed_tied_with_fastest"] = r in tied
        best = min(tied, key=lambda r: (r["opset"], r["export_s"]))
    return {
        "candidates": rows,
        "choice": {"exporter": best["exporter"], "opset": best["opset"]} if best else None,
        "noise_floor": round(noise, 3),
        "rule": "fp32 within validation tolerance and byte-reproducible; CPU batch-1 median within the noise floor "
                "of the fastest (spread among identical graphs, >= 5%); then lowest opset; then fastest export",
        "machine": {"torch": torch.__version__, "onnxruntime": ort.__version__, "cuda": cuda,
                    "cpu_threads": torch.get_num_threads(), "rounds": rounds},
    }


def main() -> None:
    """Print the measurements as a table (and JSON with --json)."""
    from framegen.models.allocator import keep_freed_memory

    keep_freed_memory()  # PyTorch's activations reused, not page-faulted anew (models/allocator.py)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--rounds", type=int, default=7, help="timing rounds (interleaved)")
    args = parser.parse_args()
    result = measure(rounds=args.rounds)
    cols = ["exporter", "opset", "export_s", "reproducible", "max_err_fp32", "mean_err_fp32", "max_err_fp16",
            "mean_err_fp16", "max_err_encoder_fp32", "ms_b1_cpu_fp32", "ms_b1_cpu_fp16", "ms_b1_cuda_fp32",
            "ms_b1_cuda_fp16", "speed_tied_with_fastest", "size_mb_fp32", "graph_sha256", "error"]
    cols = [c for c in cols if any(c in r for r in result["candidates"])]
    print("\t".join(cols))
    for r in result["candidates"]:
        print("\t".join(f"{r[c]:.3g}" if isinstance(r.get(c), float) else str(r.get(c, "-"))[:12] for c in cols))
    print("cuda:", "measured" if result["machine"]["cuda"] else "not available on this machine")
    print("noise floor:", result["noise_floor"], "(spread of CPU medians among identical graphs)")
    print("choice:", result["choice"], "--", result["rule"])
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
