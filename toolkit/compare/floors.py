"""The quality floors of compressed generators (int8, pal6, pal4) and of bf16 compute: plain data, read by
:mod:`framegen.toolkit.compare.profiles`
(their parity profiles) and :mod:`framegen.toolkit.export.compress` (the export's quality gate), so neither imports
the other.

A floor bounds the final frame inside the crop box (uint8 levels): its PSNR against PyTorch fp32's frame and its
largest level error. It is a quality demand, not a measured noise level: a final frame at 30 dB with no pixel off by
more than 96 of 255 levels is the least this project offers as "compressed but usable". What the calibrated
stand-in checkpoints reach is in docs/PARITY.md ("Compressed artifacts"); real weights need their own measurement.
"""

from __future__ import annotations

#: compressed precision tags and the artifact formats each exists in
COMPRESSED: dict[str, tuple[str, ...]] = {"int8": ("onnx", "coreml"), "pal6": ("coreml",), "pal4": ("coreml",)}
#: compute precisions judged by a floor without an artifact of their own (bf16: the fp32 ONNX computed in bfloat16)
COMPUTED: dict[str, tuple[str, ...]] = {"bf16": ("onnx",)}
#: precision -> (min final-frame PSNR in dB, max final-frame level error)
DEFAULT_FLOORS: dict[str, tuple[float, float]] = {"int8": (30.0, 96.0), "pal6": (30.0, 96.0), "pal4": (30.0, 96.0),
                                                  "bf16": (30.0, 96.0)}
DESCRIPTIONS: dict[str, str] = {
    "int8": "int8 artifacts (ONNX QDQ weights + activations; Core ML 8-bit weights, fp16 compute) against PyTorch "
            "fp32: a quality floor on the final frame",
    "pal6": "Core ML 6-bit palettized weights (fp16 compute) against PyTorch fp32: a quality floor on the final frame",
    "pal4": "Core ML 4-bit palettized weights (fp16 compute) against PyTorch fp32: a quality floor on the final frame",
    "bf16": "the fp32 ONNX computed in bfloat16 (OpenVINO's bf16 hint) against PyTorch fp32: a quality floor on the "
            "final frame (parity judges bf16 by limits derived from the checkpoint)",
}
