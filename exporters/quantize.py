"""Compressed generator artifacts: int8 ONNX (static QDQ quantization) and Core ML packages with compressed weights.

ONNX: :func:`quantize_onnx` statically quantizes an fp32 ONNX graph with ``onnxruntime.quantization`` in the QDQ
format (QuantizeLinear / DequantizeLinear pairs around each quantized op, so any runtime that knows QDQ, ONNX Runtime
and OpenVINO included, runs it), weights int8 per output channel, activation ranges calibrated on the inputs it is
given (template crops and audio windows, chosen by the caller). The format depends on the runtime the artifact is
for (:data:`INT8_TARGETS`). Measured on a 2-core AVX2 machine without VNNI (random-weight U-Net): OpenVINO ran an
S8S8 QDQ model 2.3x faster than ONNX Runtime fp32, ONNX Runtime ran S8S8 1.7x slower than its own fp32 and U8S8
with ``reduce_range`` (7-bit weights: no int16 saturation in its AVX2 u8 x s8 kernels) 1.55x faster. Measured on
the calibrated seed-0 generator on a 2-core AVX-512 VNNI machine, one run, batch 1: OpenVINO ran S8S8 and U8S8 at
the same speed (115 / 117 ms, fp32 294 ms), but S8S8 cost it 7.6 dB of PSNR (14.8 against 22.4 dB: symmetric int8
spends a bit on the sign of post-ReLU activations), so the OpenVINO format is U8S8; ONNX Runtime ran U8S8 with
reduce_range in 208 ms (fp32 431 ms, S8S8 657 ms).

Core ML: :func:`compress_coreml` rewrites an fp16 ML program's weights with ``coremltools.optimize.coreml``: 8-bit
linear (symmetric, per output channel) or n-bit palettization (k-means lookup table per tensor). Compute stays fp16;
the weights become ``constexpr_affine_dequantize`` / ``constexpr_lut_to_dense`` ops over the stored compressed
data (iOS16 opset), which Core ML expands when it loads the model.

Neither is validated here: :mod:`framegen.toolkit.export.compress` judges every compressed artifact against PyTorch.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from framegen.exporters.coreml_export import save_package
from framegen.exporters.errors import ExportError
from framegen.models.errors import first_line
from framegen.models.imports import coremltools, quiet

# ``float_output``: the output convolution reads int8 and writes float, and the Sigmoid after it runs in float (the
# Q/DQ pairs between them and after the Sigmoid removed). With them, OpenVINO requantized the logits and dequantized
# them again at full resolution (one Subtract of 1.9 ms in its per-layer profile). Without them, on the trained demo
# generator on 2 Zen 4 cores (`python scripts/measure_int8.py --rounds 6`, docs/PARITY.md), OpenVINO ran the file
# 1.055x as fast (median of the rounds' ratios) with the final frame 0.2 dB better (40.8 against 40.6 dB). ONNX
# Runtime ran its own target's file 1.037x and 0.988x as fast in two runs (`--rounds-on ort-cpu`): no gain, so that
# target keeps them.

#: int8 ONNX activation formats, by the runtime an artifact is quantized for. Weights are int8 per channel in both.
INT8_TARGETS: dict[str, dict[str, Any]] = {
    "openvino": {
        "activations": "uint8 (asymmetric)", "weights": "int8 per channel (symmetric)", "reduce_range": False,
        "float_output": True,
        "why": "OpenVINO's CPU plugin fuses QDQ convolutions into int8 kernels: U8S8 ran as fast as S8S8 "
               "(2.5x its fp32 on 2 AVX-512 VNNI cores) and kept 7.6 dB more PSNR; on 2 Zen 4 cores S8S8 ran "
               "1.10-1.16x faster and lost 7.5 dB on OpenVINO, 0.3 dB on ONNX Runtime (docs/PARITY.md)",
    },
    "ort": {
        "activations": "uint8 (asymmetric)", "weights": "int8 per channel (symmetric)", "reduce_range": True,
        "float_output": False,
        "why": "ONNX Runtime's x86 u8 x s8 kernels; reduce_range (7-bit weights) avoids their int16 overflow "
               "without VNNI (measured 1.55x its fp32; its S8S8 path ran 1.7x slower than fp32)",
    },
}
DEFAULT_INT8_TARGET = "openvino"
#: How activation ranges are calibrated: name -> (onnxruntime CalibrationMethod, its extra options). Percentile
#: ranges (99.999th) ignore the rare extreme activations that min / max would stretch every step of the range over;
#: on the trained demo generator they kept 42.0 dB and 35 levels where min / max kept 40.2 dB and 92-114 levels
#: (docs/PARITY.md, scripts/measure_int8.py)
INT8_CALIBRATIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "percentile": ("Percentile", {"CalibPercentile": 99.999}),
    "minmax": ("MinMax", {}),
}
DEFAULT_INT8_CALIBRATION = "percentile"
#: Core ML weight compressions: precision tag -> (coremltools config kind, bits)
COREML_COMPRESSIONS: dict[str, tuple[str, int]] = {"int8": ("linear", 8), "pal6": ("palettize", 6),
                                                   "pal4": ("palettize", 4)}
#: weights with fewer elements stay fp16 (coremltools' default threshold): the depthwise 3x3 kernels, where a lookup
#: table or a per-channel scale would cost more bytes than it saves and most of the error
COREML_WEIGHT_THRESHOLD = 2048


def _feeds(calibration: Sequence[dict[str, np.ndarray]]) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    return _Reader()


def quantize_onnx(model: Any, calibration: Sequence[dict[str, np.ndarray]], target: str = DEFAULT_INT8_TARGET,
                  exclude_ops: Sequence[str] = (), method: str = DEFAULT_INT8_CALIBRATION
                  ) -> tuple[Any, dict[str, Any]]:
    """Statically quantize an fp32 ``onnx.ModelProto`` to QDQ int8 for ``target`` (a key of :data:`INT8_TARGETS`),
    calibrating activation ranges by ``method`` (a key of :data:`INT8_CALIBRATIONS`) on ``calibration`` (feeds by
    input name, batch 1 each).

    Returns the quantized ModelProto and a JSON-able record of how it was quantized (for the manifest). The
    metadata of ``model`` is kept. ``exclude_ops``: node names left in fp32.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if target not in INT8_TARGETS:
        raise ExportError(f"unknown int8 target {target!r}; expected {', '.join(INT8_TARGETS)}")
    if method not in INT8_CALIBRATIONS:
        raise ExportError(f"unknown int8 calibration {method!r}; expected {', '.join(INT8_CALIBRATIONS)}")
    if not calibration:
        raise ExportError("int8 quantization needs at least one calibration input")
    spec = INT8_TARGETS[target]
    method_name, method_options = INT8_CALIBRATIONS[method]
    signed = spec["activations"].startswith("int8")
    with tempfile.TemporaryDirectory(prefix="framegen-quant-") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(model, os.fspath(src))
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # its "consider pre-processing" warnings: the graph is already folded
        try:
            # its calibrators print progress lines ("Collecting tensor data ...") to stdout, into a command's output
            with contextlib.redirect_stdout(io.StringIO()):
                quantize_static(
                    os.fspath(src), os.fspath(dst), _feeds(calibration), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8 if signed else QuantType.QUInt8, weight_type=QuantType.QInt8,
                    per_channel=True, reduce_range=bool(spec["reduce_range"]),
                    calibrate_method=getattr(CalibrationMethod, method_name), nodes_to_exclude=list(exclude_ops),
                    extra_options={"ActivationSymmetric": signed, "WeightSymmetric": True, **method_options},
                )
        except Exception as exc:  # onnxruntime.quantization raises bare exceptions with long traces
            raise ExportError(f"int8 quantization failed: {first_line(exc, 200)}"
                              ) from None
        finally:
            root.setLevel(level)
        out = onnx.load(os.fspath(dst))
    del out.metadata_props[:]
    out.metadata_props.extend(model.metadata_props)
    if spec["float_output"]:
        float_output(out)
    dequantized = {n.output[0] for n in out.graph.node if n.op_type == "DequantizeLinear"}
    record = {"tool": "onnxruntime.quantization.quantize_static", "format": "QDQ", "target": target,
              **{k: v for k, v in spec.items()}, "calibration": method_name, **method_options,
              "calibration_inputs": len(calibration),
              "quantized_ops": sorted({n.op_type for n in out.graph.node if n.op_type not in
                                       ("QuantizeLinear", "DequantizeLinear") and dequantized & set(n.input)})}
    return out, record


def float_output(model: Any) -> int:
    """Let each Sigmoid of a QDQ ``model`` read its input in float and write the graph output in float, in place:
    the QuantizeLinear / DequantizeLinear pairs between the convolution before it and the Sigmoid, and between the
    Sigmoid and a graph output, are removed. The convolution keeps its int8 inputs and weights. Returns the number
    of pairs removed."""
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}

    def pair_before(name: str) -> tuple[Any, Any] | None:
        dq = producer.get(name)
        q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        if q is None or q.op_type != "QuantizeLinear" or len(consumers.get(q.output[0], [])) != 1:
            return None
        return q, dq

    removed: list[Any] = []
    for node in [n for n in graph.node if n.op_type == "Sigmoid"]:
        before = pair_before(node.input[0])
        if before is not None and len(consumers.get(before[1].output[0], [])) == 1:
            node.input[0] = before[0].input[0]
            removed += before
        after = consumers.get(node.output[0], [])
        if len(after) == 1 and after[0].op_type == "QuantizeLinear":
            dqs = consumers.get(after[0].output[0], [])
            if len(dqs) == 1 and dqs[0].op_type == "DequantizeLinear" and dqs[0].output[0] in outputs:
                node.output[0] = dqs[0].output[0]  # the graph output keeps its name
                removed += [after[0], dqs[0]]
    for node in removed:
        graph.node.remove(node)
    used = {name for node in graph.node for name in node.input}
    keep = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    return len(removed) // 2


def compress_coreml(package: str | os.PathLike[str], out: str | os.PathLike[str], precision: str,
                    metadata: dict[str, str] | None = None) -> tuple[Path, dict[str, Any]]:
    """Compress the weights of the ML program at ``package`` (an fp16 .mlpackage) into a new package at ``out``:
    ``int8`` (8-bit linear, symmetric, per output channel), ``pal6`` or ``pal4`` (6- / 4-bit k-means palettization
    per tensor). ``metadata`` replaces the given user-defined metadata keys. Returns the path and a JSON-able record.
    """
    if precision not in COREML_COMPRESSIONS:
        raise ExportError(f"unknown Core ML weight compression {precision!r}; expected "
                          f"{', '.join(COREML_COMPRESSIONS)}")
    ct = coremltools()
    import coremltools.optimize.coreml as cto

    kind, bits = COREML_COMPRESSIONS[precision]
    with quiet("coremltools"):
        ml = ct.models.MLModel(os.fspath(package), skip_model_load=True)
        if kind == "linear":
            op_config: Any = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8",
                                                         granularity="per_channel",
                                                         weight_threshold=COREML_WEIGHT_THRESHOLD)
            compressed = cto.linear_quantize_weights(ml, cto.OptimizationConfig(global_config=op_config))
        else:
            op_config = cto.OpPalettizerConfig(mode="kmeans", nbits=bits, granularity="per_tensor",
                                               weight_threshold=COREML_WEIGHT_THRESHOLD)
            compressed = cto.palettize_weights(ml, cto.OptimizationConfig(global_config=op_config))
    for key, value in sorted((metadata or {}).items()):
        compressed.user_defined_metadata[key] = value
    path = save_package(compressed, out)
    tool = "linear_quantize_weights" if kind == "linear" else "palettize_weights"
    record = {"tool": f"coremltools.optimize.coreml.{tool}",
              "weights": ("int8 linear symmetric per output channel" if kind == "linear"
                          else f"{bits}-bit k-means palette per tensor"),
              "weight_threshold": COREML_WEIGHT_THRESHOLD, "compute_precision": "fp16",
              "ops": "constexpr_affine_dequantize" if kind == "linear" else "constexpr_lut_to_dense"}
    return path, record
