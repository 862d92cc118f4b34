"""The API's exports and the backends that run them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from framegen.models.bundle import load_bundle
from framegen.models.errors import FramegenError
from framegen.runtimes.registry import auto_order, list_backends
from framegen.runtimes.spec import OpenRequest
from framegen.toolkit.api.common import (
    PathLike,
    UsageError,
    check_outputs,
    split_list,
    write_export_junit,
)
from framegen.toolkit.bench.machine import describe_machine
from framegen.toolkit.bench.precision import AUTO_PRECISION, choose_precision
from framegen.toolkit.export.bundle import export_bundle
from framegen.toolkit.frames.plan import PRECISIONS


def export(checkpoint: PathLike, out: PathLike, *, audio_encoder: PathLike | None = None,
           formats: str | Sequence[str] = ("onnx", "coreml"), precisions: str | Sequence[str] = ("fp32", "fp16"),
           io: str | Sequence[str] = ("tensor",), opset: int | None = None, mode: str | None = None,
           force: bool = False, progress: Callable[[str], None] | None = None,
           triton: PathLike | None = None, triton_options: Any = None, audio_frontend: bool = False,
           compression: Any = None, junit_xml: PathLike | None = None) -> Any:
    """Export a SyncTalk_2D generator checkpoint (and optionally its audio encoder) to a validated bundle.

    Every artifact is validated against the PyTorch module; one that fails makes the export fail and leaves nothing
    at ``out``. ``formats``: onnx, coreml; ``precisions``: fp32, fp16; ``io``: tensor (the contract's float tensors),
    image (uint8 BGR image I/O variants for ports). ``triton``: also write a Triton model repository there
    (``triton_options``: a :class:`framegen.exporters.triton.TritonOptions`). ``precisions`` int8 / pal6 / pal4
    add compressed generators, calibrated and judged as ``compression`` (a
    :class:`framegen.toolkit.export.compress.CompressOptions`) says. ``junit_xml``: also write the validation as
    JUnit XML there (one test case per artifact with its figures and limits; a refused export is one failing case).
    Returns the written :class:`framegen.models.bundle.Bundle`.
    """
    check_outputs(None, None, junit_xml)
    try:
        dest = export_bundle(checkpoint, out, audio_encoder=audio_encoder, formats=split_list(formats),
                             precisions=split_list(precisions), opset=opset, io=split_list(io), mode=mode, force=force,
                             progress=progress, triton=triton, triton_options=triton_options,
                             audio_frontend=audio_frontend, compression=compression)
    except FramegenError as exc:
        if junit_xml is not None:  # a refused export is a failing test case in CI, with the reason
            write_export_junit([], junit_xml, error=str(exc))
        raise
    bundle = load_bundle(dest)
    if junit_xml is not None:
        write_export_junit([a.entry for a in bundle.artifacts], junit_xml, refused=bundle.manifest.get("refused", []))
    return bundle


@dataclass(frozen=True)
class BackendRow:
    """One backend as ``framegen backends`` lists it."""

    name: str
    available: bool
    reason: str
    runtime: str
    device: str
    needs: str
    precisions: tuple[str, ...]
    ios: tuple[str, ...]
    verifier: bool
    description: str
    #: with a bundle / checkpoint: ``None`` when the backend can be opened from it, else why not
    artifact: str | None = None
    #: with a bundle / checkpoint: whether ``auto`` picks this one
    auto: bool = False

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}


class BackendList(list):
    """The rows of :func:`backends` (a list of :class:`BackendRow`), with the CPU they were listed on and, given a
    bundle and/or checkpoint, why ``auto`` picks the one it picks."""

    cpu: dict[str, Any]
    auto_reason: str | None = None
    #: what ``--precision auto`` picks for the bundle on this CPU, and why (:func:`choose_precision`)
    precision_choice: str | None = None


def backends(*, bundle: PathLike | None = None, checkpoint: PathLike | None = None,
             precision: str = "fp32") -> BackendList:
    """Every backend framegen knows, whether it runs here and why not; with a bundle and/or checkpoint also whether
    each can be opened from it and which one ``auto`` picks, and why (``auto_reason``); ``cpu``: the CPU's model,
    cores and vector extensions; ``precision_choice``: what ``--precision auto`` picks on this CPU, and why.
    ``precision`` ``auto``: the rows are for that choice."""
    choice = choose_precision(bundle) if bundle is not None or checkpoint is not None else None
    if precision == AUTO_PRECISION:
        precision = choice.precision if choice is not None else "fp32"
    if precision not in PRECISIONS:
        raise UsageError(f"--precision {precision!r}: expected auto or one of {', '.join(PRECISIONS)}")
    request = None
    if bundle is not None or checkpoint is not None:
        if bundle is not None:
            load_bundle(bundle)  # a bad bundle is the user's error, not every backend's "reason"
        if checkpoint is not None and not Path(checkpoint).is_file():
            raise UsageError(f"{checkpoint}: no such checkpoint file")
        request = OpenRequest(checkpoint=checkpoint, bundle=bundle, precision=precision)
    rows = BackendList(BackendRow(name=r["name"], available=r["available"], reason=r["reason"], runtime=r["runtime"],
                                  device=r["device"], needs=r["needs"], precisions=tuple(r["precisions"]),
                                  ios=tuple(r["ios"]), verifier=r["verifier"], description=r["description"],
                                  artifact=r.get("artifact"), auto=bool(r.get("auto")))
                       for r in list_backends(request))
    rows.cpu = describe_machine(load=False).get("cpu", {})
    if request is not None:
        rows.auto_reason = _auto_reason(rows, precision)
    rows.precision_choice = choice.describe() if choice is not None else None
    return rows


def _auto_reason(rows: BackendList, precision: str) -> str:
    choice = next((r.name for r in rows if r.auto), None)
    if choice is None:
        return "none: no available backend can be opened from this"
    order = auto_order()
    passed = order[:order.index(choice)] if choice in order else []
    return (f"{choice}: the first backend of auto's order ({', '.join(order)}) that runs here and can be opened "
            f"from this; {', '.join(passed) or 'none'} passed over (see their reason / artifact), at precision "
            f"{precision}")


def export_audio_frontend(audio_encoder: PathLike, out: PathLike, *, formats: str | Sequence[str] = ("onnx", "coreml"),
                          opset: int | None = None, force: bool = False, speech: PathLike | None = None,
                          progress: Callable[[str], None] | None = None) -> Any:
    """Export SyncTalk_2D's audio front-end for an audio encoder checkpoint: ``audio_frontend`` (16 kHz PCM -> mel)
    and ``audio_features`` (PCM -> 'ave' features), ONNX and / or Core ML fp32, validated against framegen's mel and
    features (``speech``: the speech file validation uses; default the shared fixture, else synthetic). Returns the
    written :class:`framegen.models.bundle.Bundle`. ``framegen export --audio-frontend`` adds the same artifacts to a
    full bundle."""
    from framegen.toolkit.export.frontend import export_audio_frontend as _export

    return load_bundle(_export(audio_encoder, out, formats=split_list(formats), opset=opset, force=force, speech=speech,
                               progress=progress))
