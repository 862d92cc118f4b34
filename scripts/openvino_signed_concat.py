#!/usr/bin/env python
"""A four-node QDQ graph that OpenVINO's CPU plugin computes wrongly when the activation between the two
convolutions is signed int8, and exactly when it is uint8: why framegen's int8 files keep unsigned activations.

    python scripts/openvino_signed_concat.py [--channels 32] [--size 40] [--seed 0]

The graph: input -> QuantizeLinear / DequantizeLinear -> Conv 3x3 -> QuantizeLinear / DequantizeLinear (the
activation: int8 with zero point 0, or uint8 with a zero point, over the same range) -> Concat of that tensor with
itself -> Conv 1x1 -> output. Each variant runs on ONNX Runtime and on OpenVINO (f32 inference precision); both
compute the same quantized arithmetic, so their outputs should agree to float rounding. A variant without the Concat
(the second convolution reads the activation directly) is printed beside them. Measured 2026-12-07 with OpenVINO
2026.4.1 on a 2-core AMD EPYC (Zen 4, AVX-512 VNNI): the signed Concat differed by a mean of 0.37 (max 2.3) on
outputs up to 12.6, and with ``--seed 3 --channels 48 --size 24`` by 0.46 (max 2.7) on outputs up to 19.0; every
other variant by at most 0.06, a rounding tie here and there.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np


def graph(channels: int, size: int, seed: int, signed: bool, concat: bool) -> tuple[Any, np.ndarray]:
    """The QDQ model and an input for it; the activation's range is the float convolution's own."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, channels, size, size)).astype(np.float32)

    def weights(shape: tuple[int, ...], spread: float) -> tuple[np.ndarray, np.ndarray]:
        w = rng.standard_normal(shape).astype(np.float32) * spread
        scale = (np.abs(w).reshape(shape[0], -1).max(axis=1) / 127).astype(np.float32)
        return np.round(w / scale.reshape(-1, *[1] * (len(shape) - 1))).astype(np.int8), scale

    wa, sa = weights((channels, channels, 3, 3), 0.1)
    wb, sb = weights((channels, channels * (2 if concat else 1), 1, 1), 0.2)
    prefix = [helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
              helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
              helper.make_node("DequantizeLinear", ["wa", "sa", "za"], ["wad"], axis=0),
              helper.make_node("Conv", ["xd", "wad"], ["a"], pads=[1, 1, 1, 1])]
    inits = [numpy_helper.from_array(np.array(4 / 127, np.float32), "sx"),
             numpy_helper.from_array(np.array(0, np.int8), "zx"),
             numpy_helper.from_array(wa, "wa"), numpy_helper.from_array(sa, "sa"),
             numpy_helper.from_array(np.zeros(channels, np.int8), "za")]

    def model_of(nodes: list[Any], out: str, shape: list[int], extra: list[Any]) -> Any:
        g = helper.make_graph(nodes, "signed_concat", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                      list(x.shape))],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, shape)], inits + extra)
        model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
        onnx.checker.check_model(model)
        return model

    # the activation's range: the first convolution's own output, in float (ONNX Runtime)
    act = ort.InferenceSession(model_of(prefix, "a", list(x.shape), []).SerializeToString(),
                               providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    lo, hi = float(act.min()), float(act.max())
    if signed:
        act_scale, act_zero = max(-lo, hi) / 127, np.array(0, np.int8)
    else:
        act_scale, act_zero = (hi - lo) / 255, np.array(round(-lo / ((hi - lo) / 255)), np.uint8)
    nodes = [*prefix, helper.make_node("QuantizeLinear", ["a", "s_act", "z_act"], ["aq"]),
             helper.make_node("DequantizeLinear", ["aq", "s_act", "z_act"], ["ad"]),
             helper.make_node("DequantizeLinear", ["wb", "sb", "zb"], ["wbd"], axis=0)]
    if concat:
        nodes += [helper.make_node("Concat", ["ad", "ad"], ["cat"], axis=1),
                  helper.make_node("Conv", ["cat", "wbd"], ["y"])]
    else:
        nodes += [helper.make_node("Conv", ["ad", "wbd"], ["y"])]
    tail = [numpy_helper.from_array(np.array(act_scale, np.float32), "s_act"),
            numpy_helper.from_array(act_zero, "z_act"),
            numpy_helper.from_array(wb, "wb"), numpy_helper.from_array(sb, "sb"),
            numpy_helper.from_array(np.zeros(wb.shape[0], np.int8), "zb")]
    return model_of(nodes, "y", [1, channels, size, size], tail), x


def main() -> int:
    """Print, per variant, how far OpenVINO's output is from ONNX Runtime's."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--size", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    import onnxruntime as ort
    import openvino as ov
    from framegen.toolkit.bench.machine import describe_machine

    cpu = describe_machine(load=False).get("cpu", {})
    print(f"OpenVINO {ov.__version__}, ONNX Runtime {ort.__version__}; CPU: {cpu.get('model')} "
          f"({', '.join(cpu.get('vector_extensions', []))})")
    print("| activation | second convolution reads | OpenVINO vs ONNX Runtime: max | mean | output max |")
    print("|---|---|---:|---:|---:|")
    core = ov.Core()
    for signed in (True, False):
        for concat in (True, False):
            model, x = graph(args.channels, args.size, args.seed, signed, concat)
            ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
                None, {"x": x})[0]
            compiled = core.compile_model(core.read_model(model.SerializeToString(), b""), "CPU",
                                          {"INFERENCE_PRECISION_HINT": "f32"})
            got = compiled({"x": x})[compiled.outputs[0]]
            diff = np.abs(got.astype(np.float64) - ref)
            print(f"| {'int8, zero point 0' if signed else 'uint8, zero point'} | "
                  f"{'a Concat of it' if concat else 'it directly'} | {diff.max():.4f} | {diff.mean():.2e} | "
                  f"{np.abs(ref).max():.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
