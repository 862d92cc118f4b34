"""One exporter per artifact format, behind one interface (after Optimum's exporters: a config per format, export
apart from validation, which :mod:`framegen.toolkit.export.validate` does).

``framegen.toolkit.export.bundle.export_bundle`` asks the registry for each requested format and never branches on a
format's name. A format exporter traces a module once (:meth:`FormatExporter.trace`, the slow step, shared by every
precision), builds each precision's artifact from that trace (:meth:`FormatExporter.build`) and the image-I/O
variants from one image trace (:meth:`FormatExporter.trace_image`, :meth:`FormatExporter.build_image`), and describes
itself for the manifest (:meth:`FormatExporter.tools`).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from typing import Any

from framegen.exporters import coreml_export, onnx_export
from framegen.exporters.errors import ExportError
from framegen.exporters.image_io import build_coreml_image_artifact, build_onnx_image_artifact, coreml_image_program


class FormatExporter(ABC):
    """Export of SyncTalk_2D modules (``generator``, ``audio_encoder``) to one artifact format."""

    #: registry name, also the manifest's ``format``
    name: str
    #: file name ending of its artifacts
    suffix: str

    @abstractmethod
    def trace(self, module: Any, kind: str, opset: int | None) -> Any:
        """The format's intermediate form of ``module`` (an fp32 ONNX graph, a ``torch.export`` program)."""

    @abstractmethod
    def build(self, base: Any, kind: str, mode: str, precision: str, path: str | os.PathLike[str],
              metadata: dict[str, str], opset: int | None) -> dict[str, Any]:
        """Write the artifact of ``precision`` from ``base`` to ``path`` with ``metadata`` embedded; returns the
        format-specific fields of its manifest entry."""

    @abstractmethod
    def trace_image(self, module: Any, base: Any, opset: int | None) -> Any:
        """The intermediate form every precision's image-I/O variant of the generator ``module`` is built from;
        ``base``: :meth:`trace` of the module, when already made."""

    @abstractmethod
    def build_image(self, module: Any, precision: str, path: str | os.PathLike[str], metadata: dict[str, str],
                    image_base: Any, opset: int | None) -> dict[str, Any]:
        """Write the generator's uint8 image-I/O variant (see :mod:`framegen.exporters.image_io`) of ``precision``
        from ``image_base`` (:meth:`trace_image`)."""

    @abstractmethod
    def tools(self, opset: int | None) -> dict[str, Any]:
        """How this format was exported, for the manifest's ``tools.export``."""


class OnnxExporter(FormatExporter):
    """ONNX through the measured exporter choice (:data:`framegen.exporters.onnx_export.EXPORT_CHOICE`); fp16 keeps
    fp32 inputs and outputs."""

    name = "onnx"
    suffix = ".onnx"

    def trace(self, module: Any, kind: str, opset: int | None) -> Any:
        """The fp32 ONNX graph of the module."""
        build = onnx_export.generator_onnx_model if kind == "generator" else onnx_export.encoder_onnx_model
        return build(module, "fp32", opset)

    def build(self, base: Any, kind: str, mode: str, precision: str, path: str | os.PathLike[str],
              metadata: dict[str, str], opset: int | None) -> dict[str, Any]:
        """Save ``base`` (converted to float16 weights and compute for fp16) with its metadata."""
        proto = onnx_export.to_float16(base) if precision == "fp16" else base
        onnx_export.set_metadata(proto, metadata)
        onnx_export.save_onnx(proto, path)
        return {"opset": opset or onnx_export.DEFAULT_OPSET, "exporter": onnx_export.EXPORT_CHOICE["exporter"]}

    def trace_image(self, module: Any, base: Any, opset: int | None) -> Any:
        """The fp32 tensor graph, which each image-I/O variant wraps (``base`` when given: no second trace)."""
        return base if base is not None else self.trace(module, "generator", opset)

    def build_image(self, module: Any, precision: str, path: str | os.PathLike[str], metadata: dict[str, str],
                    image_base: Any, opset: int | None) -> dict[str, Any]:
        """The tensor graph wrapped with the pre- and post-processing."""
        return build_onnx_image_artifact(module, precision, path, metadata, base=image_base, opset=opset)

    def tools(self, opset: int | None) -> dict[str, Any]:
        """Exporter, opset and the fp16 scheme."""
        return {**onnx_export.EXPORT_CHOICE, "opset": opset or onnx_export.DEFAULT_OPSET,
                "opset_overridden": opset is not None,
                "fp16": "fp32 graph with float16 weights and compute, float32 inputs/outputs "
                        "(exporters.onnx_export.to_float16)"}


class CoreMLExporter(FormatExporter):
    """Core ML ML programs: ``torch.export`` -> ``coremltools.convert``, flexible batch."""

    name = "coreml"
    suffix = ".mlpackage"

    def trace(self, module: Any, kind: str, opset: int | None) -> Any:
        """The ``torch.export`` program (decompositions run) of the module."""
        return coreml_export.exported_program(module, kind)

    def build(self, base: Any, kind: str, mode: str, precision: str, path: str | os.PathLike[str],
              metadata: dict[str, str], opset: int | None) -> dict[str, Any]:
        """Convert ``base`` to an ML program computing in ``precision``."""
        coreml_export.convert(base, kind, mode, path, precision, metadata)
        return {"minimum_deployment_target": coreml_export.MINIMUM_DEPLOYMENT_TARGET, "compute_precision": precision,
                "batch_range": [1, coreml_export.MAX_BATCH]}

    def trace_image(self, module: Any, base: Any, opset: int | None) -> Any:
        """The ``torch.export`` program of the image-I/O wrapper (a module of its own: ``base`` does not serve)."""
        return coreml_image_program(module)

    def build_image(self, module: Any, precision: str, path: str | os.PathLike[str], metadata: dict[str, str],
                    image_base: Any, opset: int | None) -> dict[str, Any]:
        """A BGR-image-in, BGR-image-out ML program (batch 1)."""
        return build_coreml_image_artifact(module, precision, path, metadata, program=image_base)

    def tools(self, opset: int | None) -> dict[str, Any]:
        """Route, program type, deployment target and batch range."""
        return {"route": "torch.export.export(...).run_decompositions({}) -> coremltools.convert",
                "convert_to": "mlprogram", "minimum_deployment_target": coreml_export.MINIMUM_DEPLOYMENT_TARGET,
                "batch": f"flexible 1..{coreml_export.MAX_BATCH} (RangeDim)"}


EXPORTERS: dict[str, FormatExporter] = {e.name: e for e in (OnnxExporter(), CoreMLExporter())}


def get_exporter(fmt: str) -> FormatExporter:
    """The exporter of format ``fmt``, or a one-line error listing the formats there are."""
    if fmt not in EXPORTERS:
        raise ExportError(f"unknown format {fmt!r}; expected {', '.join(EXPORTERS)}")
    return EXPORTERS[fmt]
