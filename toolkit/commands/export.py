"""`framegen export`: checkpoint -> validated bundle of ONNX / Core ML artifacts with a manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from framegen.models.validation import entry_records


def register(app: typer.Typer) -> None:
    """Add the `export` command."""
    app.command("export")(export)


def export(
    checkpoint: Annotated[Path, typer.Argument(help="SyncTalk_2D generator checkpoint (.pth).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Bundle directory to create.")],
    audio_encoder: Annotated[Path | None, typer.Option(
        "--audio-encoder", "-e", help="Also export this audio encoder checkpoint (audio_visual_encoder.pth).")] = None,
    formats: Annotated[str, typer.Option("--formats", "-f", help="Comma-separated: onnx, coreml.")] = "onnx,coreml",
    precision: Annotated[str, typer.Option("--precision", "-p", help=(
        "Comma-separated: fp32, fp16, int8 (ONNX QDQ; Core ML 8-bit weights), pal6, pal4 (Core ML palettized "
        "weights), bf16 (no file: judges the fp32 ONNX computed in bf16 on OpenVINO by its quality floor and records "
        "the verdict, which auto reads)."))]
    = "fp32,fp16",
    opset: Annotated[int | None, typer.Option("--opset", help="ONNX opset (default: the measured choice).")] = None,
    mode: Annotated[str | None, typer.Option(
        "--mode", "-m", help="ave, hubert or wenet (ave and hubert checkpoints look alike; default ave).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace OUT if it is an existing bundle.")] = False,
    io: Annotated[str, typer.Option("--io", help="Comma-separated generator I/O variants: tensor (the contract's "
                                    "float tensors), image (uint8 BGR image in and out, for ports).")] = "tensor",
    triton: Annotated[Path | None, typer.Option(
        "--triton", help="Also write a Triton model repository (generator, audio_encoder) here.")] = None,
    triton_trt_fp16: Annotated[bool, typer.Option(
        "--triton-trt-fp16", help="In --triton configs, run the ONNX Runtime backend's TensorRT fp16 engine.")]
    = False,
    audio_frontend: Annotated[bool, typer.Option(
        "--audio-frontend", help="Also export the audio front-end (fp32): audio_frontend (16 kHz PCM -> mel) and "
        "audio_features (PCM -> 'ave' features); needs --audio-encoder.")] = False,
    template: Annotated[Path | None, typer.Option(
        "--template", help="int8/pal: template whose crops calibrate and judge (default: a synthetic one).")] = None,
    features: Annotated[Path | None, typer.Option(
        "--features", help="int8/pal: features (.npy) for the audio windows (default: seeded 'ave'-like).")] = None,
    int8_target: Annotated[str, typer.Option(
        "--int8-target", help="int8 ONNX quantized for: openvino (U8S8) or ort (U8S8, reduce_range).")] = "openvino",
    int8_calibration: Annotated[str, typer.Option(
        "--int8-calibration", help="int8 ONNX activation ranges: percentile (99.999th) or minmax.")] = "percentile",
    min_psnr: Annotated[float | None, typer.Option(
        "--min-psnr", help="int8/pal quality floor: final-frame PSNR in dB (default 30).")] = None,
    max_level_error: Annotated[float | None, typer.Option(
        "--max-level-error", help="int8/pal quality floor: largest final-frame level error (default 96).")] = None,
    skip_refused: Annotated[bool, typer.Option(
        "--skip-refused", help="int8/pal: leave an artifact below its floor out of the bundle (listed with its "
        "figures in manifest.json's refused) instead of failing the export.")] = False,
    junit_xml: Annotated[Path | None, typer.Option(
        "--junit-xml", help="Write the validation as JUnit XML (one test case per artifact) for CI.")] = None,
) -> None:
    """Export, validate every artifact against PyTorch, and write the bundle with manifest.json.

    An artifact that fails validation fails the export (exit 2) and leaves no bundle behind.
    """
    from framegen.toolkit.api import export as api_export
    from framegen.toolkit.common.console import note

    bundle = api_export(checkpoint, out, audio_encoder=audio_encoder, formats=formats, precisions=precision,
                        io=io, opset=opset, mode=mode, force=force, progress=note, triton=triton,
                        triton_options=_triton_options(triton_trt_fp16) if triton is not None else None,
                        audio_frontend=audio_frontend,
                        compression=_compression(template, features, int8_target, min_psnr, max_level_error,
                                                 int8_calibration, skip_refused),
                        junit_xml=junit_xml)
    _print_summary(bundle.manifest, bundle.root)


def _compression(template: Path | None, features: Path | None, target: str, min_psnr: float | None,
                 max_level: float | None, calibration: str = "percentile", skip_refused: bool = False) -> Any:
    from framegen.toolkit.export.compress import CompressOptions

    opts = CompressOptions(template=template, features=features, int8_target=target, min_psnr_db=min_psnr,
                           max_level_error=max_level, int8_calibration=calibration, skip_refused=skip_refused)
    opts.check()  # before any tracing: a bad option costs nothing
    return opts


def _triton_options(trt_fp16: bool) -> Any:
    from framegen.exporters.triton import TritonOptions

    return TritonOptions(tensorrt_fp16=trt_fp16)


def _runner(runtime: str | None) -> str:
    if runtime is None:
        return "-"
    return "ort" if runtime.startswith("onnxruntime") else "mil" if runtime.startswith("coreml-mil") else runtime


def _print_summary(manifest: dict[str, Any], dest: Path) -> None:
    from framegen.toolkit.common.console import out
    from rich.table import Table

    src = manifest["source"]
    onnx_choice = manifest["tools"]["export"]["onnx"]
    table = Table(title=f"{dest} (mode {src['mode']}, checkpoint sha256 {src['sha256'][:12]}…)",
                  box=None, padding=(0, 1), pad_edge=False)
    table.add_column("artifact", no_wrap=True)
    for col in ("MB", "sha256", "checked", "figures against their limits", "run by"):
        table.add_column(col, justify="right" if col == "MB" else "left", no_wrap=col != "figures against their limits")
    for a in manifest["artifacts"]:
        for k, (name, record) in enumerate(entry_records(a)):
            table.add_row(name, f"{a['bytes'] / 1e6:.1f}" if k == 0 else "", a["sha256"][:8] if k == 0 else "",
                          record.kind, "; ".join(c.describe() for c in record.checks) or "-", _runner(record.runtime))
    out.print(table)
    for r in manifest.get("refused", []):
        out.print(f"left out: {r['reason']}")
    out.print(f"ONNX: {onnx_choice['exporter']} exporter, opset {onnx_choice['opset']}. Core ML: mlprogram, "
              f"{manifest['tools']['export']['coreml']['minimum_deployment_target']}+. Errors against PyTorch "
              "(run by ort = ONNX Runtime CPU, mil = coreml-mil verifier); weights_max_rel = worst relative error of "
              "a convolution's weights against the checkpoint's; image figures in uint8 levels.")
