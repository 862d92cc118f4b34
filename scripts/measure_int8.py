"""What a quantization engineer would try when int8 ONNX misses the quality floor, measured on the trained demo
checkpoint: calibration method, more calibration frames, and layers kept in fp32.

    python scripts/measure_int8.py [--calibration 8] [--json out.json] [--weights W.npz] [--template DIR]
        [--features F.npy]

The fp32 ONNX generator of the trained demo checkpoint is quantized with ONNX Runtime's ``quantize_static`` (QDQ,
uint8 asymmetric activations, int8 per-channel symmetric weights: framegen's ``openvino`` int8 target) in several
variants, and each is judged by the export's own gate (final frames of held-out template frames against PyTorch fp32,
the 30 dB / 96-level floor) on ONNX Runtime and OpenVINO:

- ``minmax``: what ``framegen export --precision int8`` does (min / max ranges);
- ``percentile``: ranges at the 99.999th percentile of each activation (outliers clipped);
- ``entropy``: ranges that minimise the KL divergence of each activation's histogram;
- ``minmax, 32 frames``: four times the calibration data;
- ``minmax, first/last kept``: the first and the last two convolutions (the image in, the prediction out) left in
  fp32; ``percentile, first/last kept`` and ``percentile, output conv kept`` (the last one alone, 16 -> 3 channels
  per pixel: almost free) the same with percentile ranges;
- ``minmax, decoder kept``: every convolution of the up path (``up*``, ``outc``) left in fp32;
- ``minmax, audio branch kept``: the audio branch (``audio_model``, ``fuse_conv``) left in fp32;
- ``nncf, ...``: NNCF's post-training quantization of the ONNX model (``nncf.quantize``: its own placement of
  quantizers, MIXED (asymmetric activations) or PERFORMANCE preset, fast or full bias correction), when nncf is
  installed; ``nncf accuracy control``: ``nncf.quantize_with_accuracy_control``, which puts the most sensitive layers
  back in fp32 until the model output keeps 33 (40) dB against fp32 on held-out frames (``--keep DIR`` keeps them);
  ``--bf16-rest`` also runs each variant with OpenVINO's bf16 hint, so that the layers left out of int8 compute in
  bf16 rather than fp32;
- ``weights only``: no activation quantized (``op_types_to_quantize`` empty for activations is not offered by
  ``quantize_static``, so: weights rounded to int8 per channel and stored back as fp32, the error weights alone add);
- ``percentile, float output``: the export's ``openvino`` file since 2026-12-07 (the output convolution writes float,
  the Sigmoid runs in float: ``exporters/quantize.float_output``); the plain ``percentile`` row is the file before;
- ``percentile, signed activations``: every uint8 activation with a non-zero zero point turned into symmetric int8
  (zero point 0, the same range), as NNCF's PERFORMANCE preset quantizes them;
- ``percentile, signed except Concat inputs``: the same, but the tensors a Concat reads stay uint8 (OpenVINO computes
  a Concat of signed int8 wrongly: scripts/openvino_signed_concat.py);
- ``percentile, one concat scale``: each Concat's inputs quantized with the Concat output's scale and zero point, and
  the Q/DQ pair after the Concat dropped (NNCF's unified scales).

- ``ort target`` (``reduce_range``, framegen's ``ort`` file) and ``ort target, float output``: the same change for
  ONNX Runtime's file (time them with ``--rounds-on ort-cpu``).

``--rounds N`` times every variant's file (batch 1; on OpenVINO, or ``--rounds-on ort-cpu``) in N alternating rounds
of 3 s and reports the median and its ratio to the first variant's, round by round, because a VM's speed can move by
a quarter within minutes. The fps column is then the median.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def signed_activations(model: Any, spare_concat_inputs: bool = False) -> None:
    """Turn each uint8 activation quantizer with a non-zero zero point into symmetric int8 over the same range, in
    place (post-ReLU tensors, zero point 0, stay uint8). ``spare_concat_inputs``: quantizers whose tensor a Concat
    reads stay as they are (scripts/openvino_signed_concat.py)."""
    import numpy as np
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    readers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    spared = {tuple(q.input[1:3]) for q in model.graph.node if spare_concat_inputs and q.op_type == "QuantizeLinear"
              and any(r.op_type == "Concat" for dq in readers.get(q.output[0], [])
                      for r in readers.get(dq.output[0], []))}
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear" or len(node.input) < 3 or node.input[2] not in inits:
            continue
        if tuple(node.input[1:3]) in spared:
            continue
        zero, scale = numpy_helper.to_array(inits[node.input[2]]), numpy_helper.to_array(inits[node.input[1]])
        if zero.dtype != np.uint8 or zero.ndim or int(zero) == 0:
            continue
        reach = max(int(zero), 255 - int(zero)) * float(scale)
        inits[node.input[1]].CopyFrom(numpy_helper.from_array(np.array(reach / 127.0, np.float32), node.input[1]))
        inits[node.input[2]].CopyFrom(numpy_helper.from_array(np.array(0, np.int8), node.input[2]))


def one_concat_scale(model: Any) -> None:
    """Give each Concat's inputs their own Q/DQ pair at the Concat output's scale and zero point, and drop the pair
    after the Concat, in place (the Concat's output then feeds its readers already on their grid)."""
    import onnx

    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    readers: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    drop: list[Any] = []
    for node in [n for n in graph.node if n.op_type == "Concat"]:
        after = readers.get(node.output[0], [])
        if len(after) != 1 or after[0].op_type != "QuantizeLinear":
            continue
        q_out = after[0]
        for k, name in enumerate(list(node.input)):
            q_in = producer[producer[name].input[0]]  # DequantizeLinear <- QuantizeLinear <- float tensor
            tag = f"{node.name}_unified{k}"
            graph.node.extend([
                onnx.helper.make_node("QuantizeLinear", [q_in.input[0], *q_out.input[1:]], [tag + "_q"]),
                onnx.helper.make_node("DequantizeLinear", [tag + "_q", *q_out.input[1:]], [tag])])
            node.input[k] = tag
        for dq in readers[q_out.output[0]]:
            for reader in readers.get(dq.output[0], []):
                reader.input[:] = [node.output[0] if i == dq.output[0] else i for i in reader.input]
            drop.append(dq)
        drop.append(q_out)
    for n in drop:
        graph.node.remove(n)
    _prune_and_sort(graph)


def _prune_and_sort(graph: Any) -> None:
    """Remove Q/DQ nodes nothing reads, and order the nodes topologically again."""
    while True:
        used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                and not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    ordered, pending = [], list(graph.node)
    while pending:
        rest = [n for n in pending if not all(i in ready for i in n.input)]
        for n in pending:
            if n not in rest:
                ordered.append(n)
                ready.update(n.output)
        if len(rest) == len(pending):
            raise RuntimeError("the rewritten graph has a cycle")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)


def tagged_int8(path: Path, onnx: Any) -> Path:
    """A copy of the ONNX file at ``path`` tagged as the export tags its int8 artifacts, so that a backend opens it
    as one (``<stem>.tagged.onnx`` beside it)."""
    m = onnx.load(str(path))
    props = {p.key: p.value for p in m.metadata_props}
    del m.metadata_props[:]
    onnx.helper.set_model_props(m, {**props, "precision": "int8"})
    out = path.with_name(f"{path.stem}.tagged.onnx")
    onnx.save(m, str(out))
    return out


def alternating_rounds(files: list[tuple[str, Path, float]], rounds: int, runtime: str, open_backend: Any,
                       request: Any, measure: Any, onnx: Any) -> dict[str, float]:
    """Median model-only fps (batch 1) of each file on ``runtime`` over ``rounds`` rounds of 3 s, the files taken in
    turn within a round; prints each round and the medians' ratios to the first file."""
    import statistics
    from contextlib import ExitStack

    with ExitStack() as stack:
        backends = {}
        for name, path, _ in files:
            backends[name] = stack.enter_context(open_backend(runtime, request(artifact=tagged_int8(path, onnx),
                                                                               precision="int8")))
        fps: dict[str, list[float]] = {name: [] for name in backends}
        for r in range(rounds):
            for name, be in backends.items():
                fps[name].append(float(measure(be, 1, seconds=3.0)["fps"]))
            print(f"round {r + 1}: " + ", ".join(f"{n} {v[-1]:.1f}" for n, v in fps.items()), file=sys.stderr)
    medians = {name: statistics.median(v) for name, v in fps.items()}
    first = next(iter(fps))
    for name, v in fps.items():
        ratios = [a / b for a, b in zip(v, fps[first], strict=True)]
        print(f"{name}: median {medians[name]:.1f} fps, {statistics.median(ratios):.3f}x {first} "
              f"(round by round {min(ratios):.3f}-{max(ratios):.3f}x)", file=sys.stderr)
    return medians


def main() -> int:
    """Quantize, judge and print one markdown row per variant x runtime."""
    from framegen.models.allocator import keep_freed_memory

    keep_freed_memory()  # PyTorch's activations reused, not page-faulted anew (models/allocator.py)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calibration", type=int, default=8)
    ap.add_argument("--only", help="comma-separated words: run only the variants whose name holds one")
    ap.add_argument("--json")
    ap.add_argument("--weights", help="a generator .npz (train_demo.py's output) instead of the packaged demo weights")
    ap.add_argument("--template", help="calibrate and judge on this template's crops (default: a synthetic one)")
    ap.add_argument("--features", help="... with this features file's windows (default: a seeded synthetic voice)")
    ap.add_argument("--keep", help="copy the accuracy-controlled models here")
    ap.add_argument("--time", action="store_true",
                    help="also time each variant model-only on OpenVINO (batch 1), beside the fp32 file (fp32, bf16)")
    ap.add_argument("--bf16-rest", action="store_true",
                    help="also judge (and with --time, time) each variant on OpenVINO with the bf16 hint, where the "
                         "layers it left unquantized compute in bf16 instead of fp32 (CPUs with bf16 units)")
    ap.add_argument("--rounds", type=int, default=0,
                    help="time the variants in this many alternating rounds of 3 s (medians, ratios)")
    ap.add_argument("--rounds-on", default="openvino", choices=("openvino", "ort-cpu"),
                    help="the runtime --rounds times the variants on")
    args = ap.parse_args()
    import numpy as np
    import onnx
    from framegen.exporters.quantize import float_output
    from framegen.models.demo import load_demo_generator
    from framegen.models.init import init_audio_encoder
    from framegen.models.io import save_generator
    from framegen.toolkit.bench.machine import describe_machine
    from framegen.toolkit.export.bundle import export_bundle
    from framegen.toolkit.export.compress import CompressOptions, floor_for, gate_data, judge
    from framegen.toolkit.inputs.audio import ave_features, melspectrogram, torch_encoder_fn
    from framegen.toolkit.inputs.speech import synthesize_speech
    from onnx import numpy_helper
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    cpu = describe_machine(load=False).get("cpu", {})
    floor = floor_for("int8")
    rows = []
    with tempfile.TemporaryDirectory(prefix="framegen-int8-") as tmp_name:
        tmp = Path(tmp_name)
        model = load_demo_generator(args.weights)
        ckpt = save_generator(model, tmp / "demo.pth")
        bundle = export_bundle(ckpt, tmp / "b", formats=("onnx",), precisions=("fp32",))
        fp32 = Path(bundle) / "generator.fp32.onnx"
        wav = synthesize_speech(8.0, seed=777_001, f0=170.0, tempo=1.1, level=0.6).wav
        feats = Path(args.features) if args.features else tmp / "feats.npy"
        if not args.features:
            np.save(feats, ave_features(melspectrogram(wav), torch_encoder_fn(init_audio_encoder(0))))
        convs = [n.name for n in onnx.load(str(fp32)).graph.node if n.op_type == "Conv"]

        def data_for(cal: int):
            return gate_data(model, "ave", CompressOptions(template=args.template, features=feats,
                                                           calibration_frames=cal, gate_frames=4))

        class Feeds:
            def __init__(self, cal: list[dict[str, np.ndarray]]) -> None:
                self.it = iter(cal)

            def get_next(self) -> dict[str, np.ndarray] | None:
                return next(self.it, None)

        def quantize(name: str, cal: int, method: Any, exclude: list[str], extra: dict | None = None,
                     post: Any = None, reduce_range: bool = False) -> Path:
            out = tmp / f"{name}.onnx"
            quantize_static(str(fp32), str(out), Feeds(data_for(cal).calibration), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                            reduce_range=reduce_range,
                            calibrate_method=method, nodes_to_exclude=exclude,
                            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True, **(extra or {})})
            if post is not None:
                m = onnx.load(str(out))
                post(m)
                onnx.save(m, str(out))
            return out

        def weights_only() -> Path:
            m = onnx.load(str(fp32))
            conv_weights = {n.input[1] for n in m.graph.node if n.op_type == "Conv"}
            for init in m.graph.initializer:
                if init.name in conv_weights:
                    w = numpy_helper.to_array(init)
                    scale = np.abs(w).reshape(w.shape[0], -1).max(axis=1) / 127.0
                    scale = np.where(scale == 0, 1.0, scale).reshape(-1, *([1] * (w.ndim - 1)))
                    init.CopyFrom(numpy_helper.from_array((np.round(w / scale) * scale).astype(np.float32),
                                                          init.name))
            out = tmp / "weights_only.onnx"
            onnx.save(m, str(out))
            return out

        def nncf_quantize(name: str, cal: int, **kw: Any) -> Path:
            import nncf

            feeds = data_for(cal).calibration
            q = nncf.quantize(onnx.load(str(fp32)), nncf.Dataset(feeds), subset_size=len(feeds), **kw)
            out = tmp / f"{name}.onnx"
            onnx.save(q, str(out))
            return out

        def nncf_accuracy_control(name: str, cal: int, target_db: float) -> Path:
            """NNCF's accuracy-aware quantization: quantize, then put the most sensitive layers back in fp32, one
            group at a time, until the model output's PSNR against fp32 (on held-out frames) is ``target_db``."""
            import nncf
            import onnxruntime as ort
            from framegen.models.contract import GEN_AUDIO, GEN_IMAGE

            data = data_for(cal)  # validated on the gate's held-out frames, calibrated on the others
            val = [{GEN_IMAGE: data.image[i:i + 1], GEN_AUDIO: data.audio[i:i + 1]} for i in range(len(data.image))]
            ref_sess = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"])
            refs = [ref_sess.run(None, feed)[0] for feed in val]
            cap = 60.0

            def psnr_of(model: Any, items: Any) -> tuple[float, list[float]]:
                sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
                per = []
                for feed, ref in zip(items, refs, strict=False):
                    out = sess.run(None, feed)[0]
                    mse = float(np.mean((out.astype(np.float64) - ref) ** 2))
                    per.append(min(cap, 10 * np.log10(1.0 / mse)) if mse > 0 else cap)
                return float(np.mean(per)), per

            q = nncf.quantize_with_accuracy_control(
                onnx.load(str(fp32)), nncf.Dataset(data.calibration), nncf.Dataset(val), psnr_of,
                max_drop=cap - target_db, drop_type=nncf.DropType.ABSOLUTE, preset=nncf.QuantizationPreset.MIXED,
                subset_size=len(data.calibration))
            out = tmp / f"{name}.onnx"
            onnx.save(q, str(out))
            dequantized = {n.output[0] for n in q.graph.node if n.op_type == "DequantizeLinear"}
            kept = [n.name for n in q.graph.node if n.op_type == "Conv" and n.input[1] not in dequantized]
            print(f"{name}: {len(kept)} convolutions left in fp32: {', '.join(kept)}", file=sys.stderr)
            if args.keep:
                Path(args.keep).mkdir(parents=True, exist_ok=True)
                shutil.copy(out, Path(args.keep) / out.name)
            return out

        decoder = [c for c in convs if c.startswith(("/up", "/outc"))]
        audio = [c for c in convs if c.startswith(("/audio_model", "/fuse_conv"))]
        variants = [
            ("minmax", lambda: quantize("minmax", args.calibration, CalibrationMethod.MinMax, [])),
            ("percentile 99.999", lambda: quantize("pct", args.calibration, CalibrationMethod.Percentile, [],
                                                   {"CalibPercentile": 99.999})),
            ("entropy", lambda: quantize("entropy", args.calibration, CalibrationMethod.Entropy, [])),
            ("minmax, 32 frames", lambda: quantize("minmax32", 32, CalibrationMethod.MinMax, [])),
            ("minmax, first/last kept", lambda: quantize("edges", args.calibration, CalibrationMethod.MinMax,
                                                         convs[:1] + convs[-2:])),
            ("percentile, first/last kept", lambda: quantize("pct_edges", args.calibration,
                                                             CalibrationMethod.Percentile, convs[:1] + convs[-2:],
                                                             {"CalibPercentile": 99.999})),
            ("percentile, output conv kept", lambda: quantize("pct_outc", args.calibration,
                                                              CalibrationMethod.Percentile, convs[-1:],
                                                              {"CalibPercentile": 99.999})),
            (f"minmax, decoder kept ({len(decoder)} convs)",
             lambda: quantize("decoder", args.calibration, CalibrationMethod.MinMax, decoder)),
            (f"minmax, audio branch kept ({len(audio)} convs)",
             lambda: quantize("audio", args.calibration, CalibrationMethod.MinMax, audio)),
            ("weights only (int8 per channel)", weights_only),
            ("percentile, float output", lambda: quantize("pct_float", args.calibration, CalibrationMethod.Percentile,
                                                          [], {"CalibPercentile": 99.999}, post=float_output)),
            ("percentile, signed activations", lambda: quantize(
                "pct_signed", args.calibration, CalibrationMethod.Percentile, [], {"CalibPercentile": 99.999},
                post=signed_activations)),
            ("percentile, signed except Concat inputs", lambda: quantize(
                "pct_signed_nc", args.calibration, CalibrationMethod.Percentile, [], {"CalibPercentile": 99.999},
                post=lambda m: signed_activations(m, spare_concat_inputs=True))),
            ("percentile, one concat scale", lambda: quantize(
                "pct_concat", args.calibration, CalibrationMethod.Percentile, [], {"CalibPercentile": 99.999},
                post=one_concat_scale)),
            ("ort target (reduce_range)", lambda: quantize("ort", args.calibration, CalibrationMethod.Percentile, [],
                                                           {"CalibPercentile": 99.999}, reduce_range=True)),
            ("ort target, float output", lambda: quantize("ort_float", args.calibration, CalibrationMethod.Percentile,
                                                          [], {"CalibPercentile": 99.999}, post=float_output,
                                                          reduce_range=True)),
        ]
        try:
            import nncf

            variants += [
                ("nncf, mixed preset", lambda: nncf_quantize("nncf_mixed", args.calibration,
                                                              preset=nncf.QuantizationPreset.MIXED)),
                ("nncf, mixed preset, 32 frames", lambda: nncf_quantize("nncf_mixed32", 32,
                                                                         preset=nncf.QuantizationPreset.MIXED)),
                ("nncf, performance preset", lambda: nncf_quantize("nncf_perf", args.calibration,
                                                                    preset=nncf.QuantizationPreset.PERFORMANCE)),
                ("nncf, mixed, full bias correction", lambda: nncf_quantize(
                    "nncf_bc", args.calibration, preset=nncf.QuantizationPreset.MIXED, fast_bias_correction=False)),
                ("nncf accuracy control (output 33 dB)", lambda: nncf_accuracy_control("nncf_ac33", args.calibration,
                                                                                       33.0)),
                ("nncf accuracy control (output 40 dB)", lambda: nncf_accuracy_control("nncf_ac40", args.calibration,
                                                                                       40.0)),
            ]
        except ImportError:
            print("nncf not installed: its variants are skipped (pip install nncf)", file=sys.stderr)
        if args.only:
            variants = [v for v in variants if any(word in v[0] for word in args.only.split(","))]
        from framegen.runtimes.registry import open_backend
        from framegen.runtimes.spec import OpenRequest
        from framegen.toolkit.bench.core import measure

        def model_fps(path: Path, precision: str, options: dict[str, Any] | None = None) -> float:
            if precision == "int8":
                path = tagged_int8(path, onnx)
            with open_backend("openvino", OpenRequest(artifact=path, precision=precision,
                                                      options=dict(options or {}))) as be:
                return float(measure(be, 1, seconds=6.0)["fps"])

        speeds: dict[str, float] = {}
        if args.time:
            for precision in ("fp32", "bf16"):
                speeds[precision] = model_fps(fp32, precision)
                print(f"fp32 file on openvino {precision}: {speeds[precision]:.1f} fps", file=sys.stderr)
        gate = data_for(args.calibration)
        built_files: list[tuple[str, Path, float]] = []
        for name, make in variants:
            t0 = time.perf_counter()
            try:
                built_files.append((name, make(), time.perf_counter() - t0))
            except Exception as exc:  # one variant that does not build does not stop the others
                rows.append({"variant": name, "error": str(exc).splitlines()[0][:160]})
        rounds = alternating_rounds(built_files, args.rounds, args.rounds_on, open_backend, OpenRequest, measure,
                                    onnx) if args.rounds else {}
        for name, path, built in built_files:
            fps = rounds[name] if rounds else (model_fps(path, "int8") if args.time else None)
            if fps is not None:
                print(f"{name} on openvino int8: {fps:.1f} fps", file=sys.stderr)
            runs: list[tuple[str, str, dict[str, Any], float | None]] = [
                ("ort-cpu", "ort-cpu", {}, fps), ("openvino", "openvino", {}, fps)]
            if args.bf16_rest:
                bf16 = {"inference_precision": "bf16"}
                try:
                    runs.append(("openvino", "openvino, rest in bf16", bf16,
                                 model_fps(path, "int8", bf16) if args.time else None))
                except Exception as exc:  # OpenVINO 2026.4 compiles some mixed graphs in f32 only
                    rows.append({"variant": name, "runtime": "openvino, rest in bf16",
                                 "error": str(exc).splitlines()[0][:160]})
            for backend, runtime, options, speed in runs:
                try:
                    v = judge(path, "onnx", "int8", gate, floor, backend=backend, mode="ave", label=name,
                              options=options)
                except Exception as exc:
                    rows.append({"variant": name, "runtime": runtime, "error": str(exc).splitlines()[0][:160]})
                    continue
                rows.append({"variant": name, "runtime": runtime, "psnr_db": v["final_frame"]["psnr_db"],
                             "max_levels": v["final_frame"]["max_abs"], "mean_levels": v["final_frame"]["mean_abs"],
                             "passed": v["passed"], "built_s": round(built, 1), "openvino_fps": speed})
                print(f"{name} on {runtime}: {v['final_frame']['psnr_db']:.1f} dB, max "
                      f"{v['final_frame']['max_abs']:.0f}" + ("" if speed is None else f", {speed:.1f} fps"),
                      file=sys.stderr)
    print(f"CPU: {cpu.get('model')}; {', '.join(cpu.get('vector_extensions', []))}")
    if speeds:
        print("model-only on openvino, batch 1: " +
              ", ".join(f"fp32 file in {k} {v:.1f} fps" for k, v in speeds.items()))
    print("| variant | judged on | final PSNR dB | max levels | mean levels | floor (30 dB, 96) | openvino int8 fps |")
    print("|---|---|---:|---:|---:|---|---:|")
    for r in rows:
        if "error" in r:
            print(f"| {r['variant']} | {r.get('runtime', '')} | {r['error']} | | | | |")
        else:
            print(f"| {r['variant']} | {r['runtime']} | {r['psnr_db']:.1f} | {r['max_levels']:.0f} | "
                  f"{r['mean_levels']:.2f} | {'pass' if r['passed'] else 'refused'} | "
                  f"{'' if r.get('openvino_fps') is None else format(r['openvino_fps'], '.1f')} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
