"""The parity engine: the same frames through the PyTorch fp32 reference and every candidate backend, compared.

Each backend renders through :func:`toolkit.render.iter_frames`, the pipeline ``framegen render`` runs (template
crops in ping-pong order, the real audio windows, the backend's own batch size, paste-back), so parity checks what
users get. Frames are compared as they stream (nothing is held but the worst frame for the heat map) at two
stages: the model output (float, 3x320x320) and the final frame (uint8, inside the crop box; outside it the frame
must be bit-identical). Limits come from the candidate's tolerance profile (:mod:`toolkit.profiles`). The bundle's
sha256 checksums are verified too: a mismatch is a failure of its own.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from framegen.models.errors import FramegenError
from framegen.toolkit.files import jsonable
from framegen.toolkit.metrics import ErrorStats
from framegen.toolkit.profiles import FINAL_FRAME, MODEL_OUTPUT, Profile, get_profile, profile_for

REFERENCE = "torch-cpu"
STAGES = (MODEL_OUTPUT, FINAL_FRAME)
# Below this output spread the generator is nearly constant (an uncalibrated checkpoint) and parity proves little.
_MIN_REFERENCE_STD = 0.05


class ParityError(FramegenError):
    """Parity cannot run as asked (unknown backend, nothing to compare, inputs that cannot be used)."""


@dataclass(frozen=True)
class Candidate:
    """One backend x artifact precision (x I/O variant) to compare against the reference."""

    backend: str
    precision: str = "fp32"
    io: str = "tensor"

    @property
    def label(self) -> str:
        """``ort-cpu/fp16`` (``/image`` appended for image-I/O variants)."""
        return f"{self.backend}/{self.precision}" + ("" if self.io == "tensor" else f"/{self.io}")


@dataclass
class StageResult:
    """One stage of one candidate: its metrics, the limits applied and the limits it broke."""

    stage: str
    kind: str
    metrics: dict[str, Any]
    limits: dict[str, float]
    failures: list[str]

    @property
    def passed(self) -> bool:
        """No limit broken."""
        return not self.failures

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"stage": self.stage, "kind": self.kind, "passed": self.passed, "metrics": jsonable(self.metrics),
                "limits": self.limits, "failures": self.failures}


@dataclass
class CandidateResult:
    """Everything parity found about one candidate."""

    candidate: Candidate
    profile: str
    frames: int = 0
    info: dict[str, Any] | None = None
    stages: list[StageResult] = field(default_factory=list)
    outside_box_diffs: int = 0
    error: str | None = None
    heatmap: str | None = None

    @property
    def passed(self) -> bool:
        """Ran, compared every frame, broke no limit, left the frame outside the box untouched."""
        return self.error is None and self.outside_box_diffs == 0 and all(s.passed for s in self.stages)

    def failures(self) -> list[str]:
        """One line per problem."""
        lines = [f"{self.candidate.label}: {self.error}"] if self.error else []
        if self.outside_box_diffs:
            lines.append(f"{self.candidate.label} {FINAL_FRAME}: {self.outside_box_diffs} value(s) outside the crop "
                         f"box differ")
        lines += [f"{self.candidate.label} {s.stage}: {'; '.join(s.failures)}" for s in self.stages if s.failures]
        return lines

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"backend": self.candidate.backend, "precision": self.candidate.precision, "io": self.candidate.io,
                "label": self.candidate.label, "profile": self.profile, "passed": self.passed, "frames": self.frames,
                "error": self.error, "outside_box_diffs": self.outside_box_diffs, "heatmap": self.heatmap,
                "info": jsonable(self.info), "stages": [s.as_dict() for s in self.stages]}


@dataclass(frozen=True)
class ChecksumResult:
    """One bundle artifact's sha256 against its manifest entry."""

    path: str
    model: str
    format: str
    precision: str
    expected: str | None
    actual: str

    @property
    def ok(self) -> bool:
        """The artifact is what the manifest says."""
        return self.expected == self.actual

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"path": self.path, "model": self.model, "format": self.format, "precision": self.precision,
                "expected": self.expected, "actual": self.actual, "ok": self.ok}


@dataclass
class ParityReport:
    """The outcome of a parity run."""

    reference: dict[str, Any]
    inputs: dict[str, Any]
    frames: list[dict[str, int]]
    checksums: list[ChecksumResult]
    candidates: list[CandidateResult]
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Every checksum matches and every candidate passes (and there was at least one)."""
        return bool(self.candidates) and all(c.ok for c in self.checksums) and all(c.passed for c in self.candidates)

    def failures(self) -> list[str]:
        """One line per problem, checksums first."""
        lines = [f"checksum {c.path}: sha256 {c.actual[:12]}… does not match the manifest's "
                 f"{str(c.expected)[:12]}…" for c in self.checksums if not c.ok]
        for cand in self.candidates:
            lines += cand.failures()
        return lines

    def as_dict(self) -> dict[str, Any]:
        """The JSON report: inputs, frames, tolerances used, per backend and stage metrics, failures."""
        profiles = {c.profile: get_profile(c.profile).as_dict() for c in self.candidates}
        return {"passed": self.passed, "failures": self.failures(), "reference": jsonable(self.reference),
                "inputs": self.inputs, "frames": self.frames, "checksums": [c.as_dict() for c in self.checksums],
                "tolerances": profiles, "candidates": [c.as_dict() for c in self.candidates], "notes": self.notes}


# ----------------------------------------------------------------------------------------------- planning

def parse_backends(text: str | None) -> list[tuple[str, str | None, str]] | None:
    """``"ort-cpu,coreml-mil:fp16,ort-cpu:fp32:image"`` -> ``[("ort-cpu", None, "tensor"), ("coreml-mil", "fp16",
    "tensor"), ("ort-cpu", "fp32", "image")]`` (name, precision or all, I/O variant); ``None`` for all."""
    if text is None or not text.strip():
        return None
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        name, *tags = (t.strip() for t in part.split(":"))
        precision, io = None, "tensor"
        for tag in tags:
            if tag in ("fp32", "fp16"):
                precision = tag
            elif tag in ("tensor", "image"):
                io = tag
            else:
                raise ParityError(f"--backends {part!r}: {tag!r} is neither a precision (fp32, fp16) nor an I/O "
                                  f"variant (tensor, image)")
        out.append((name, precision, io))
    if not out:
        raise ParityError(f"--backends {text!r} names no backend")
    return out


def _artifact_precisions(spec: Any, bundle: Any) -> list[str]:
    """Precisions of ``spec`` that the bundle can feed it (checkpoint backends: all the spec runs)."""
    if spec.needs == "checkpoint":
        return list(spec.precisions)
    return [p for p in spec.precisions if bundle.has("generator", spec.needs, p)]


def plan_candidates(bundle: Any, requested: list[tuple[str, str | None, str]] | None = None
                    ) -> tuple[list[Candidate], list[str]]:
    """The candidates to compare, and notes on the backends left out (unavailable here, or no artifact).

    ``requested`` ``None``: every available backend x every precision of it the bundle holds (checkpoint backends:
    every precision they run, the fp32 reference itself excepted), plus every image-I/O artifact x each available
    backend that runs it. Otherwise exactly the named ones (see :func:`parse_backends`); an unknown or unavailable
    backend, or a precision or variant the bundle lacks, is a ParityError.
    """
    from framegen.runtimes.registry import all_specs, availability, get_spec

    notes: list[str] = []
    cands: list[Candidate] = []
    if requested is None:
        for spec in all_specs():
            avail = availability(spec)
            if not avail.available:
                notes.append(f"{spec.name}: not available here ({avail.reason})")
                continue
            precisions = _artifact_precisions(spec, bundle)
            if spec.name == REFERENCE:
                precisions = [p for p in precisions if p != "fp32"]
            if not precisions and spec.name != REFERENCE:
                notes.append(f"{spec.name}: the bundle has no {spec.needs} generator it runs")
            cands += [Candidate(spec.name, p) for p in precisions]
        if any(a.io == "image" for a in bundle.artifacts):
            from framegen.toolkit.image_parity import plan_image_candidates

            image, image_notes = plan_image_candidates(bundle)
            cands += image
            notes += image_notes
        if not cands:
            raise ParityError(f"{bundle.root}: no available backend can run any of its generators; "
                              f"{'; '.join(notes)}")
        return cands, notes
    for name, precision, io in requested:
        spec = get_spec(name)
        avail = availability(spec)
        if not avail.available:
            raise ParityError(f"backend {name!r} is not available here: {avail.reason}")
        if io == "image":
            if "image" not in spec.ios:
                runs = ", ".join(s.name for s in all_specs() if "image" in s.ios)
                raise ParityError(f"backend {name!r} does not run image-I/O variants (those that do: {runs})")
            fmt = spec.needs
            have = [p for p in ("fp32", "fp16") if bundle.has("generator", fmt, p, "image")]
            what = f"{fmt} image-I/O"
        else:
            have = _artifact_precisions(spec, bundle)
            what = spec.needs
        if precision is not None:
            if io == "tensor" and precision not in spec.precisions:
                raise ParityError(f"backend {name!r} runs {'/'.join(spec.precisions)}, not {precision}")
            if precision not in have:
                raise ParityError(f"{bundle.root}: no generator {what} {precision} artifact for {name!r} "
                                  f"(it has {'/'.join(have) or 'none'})")
            wanted = [precision]
        else:
            if not have:
                raise ParityError(f"{bundle.root}: no generator {what} artifact that {name!r} runs")
            wanted = have
        for p in wanted:
            c = Candidate(name, p, io)
            if c not in cands:
                cands.append(c)
    return cands, notes


def verify_checksums(bundle: Any) -> list[ChecksumResult]:
    """Every artifact's sha256 against the manifest (all of them, not just the first mismatch)."""
    from framegen.models.bundle import sha256_path

    results = []
    for a in bundle.artifacts:
        expected = a.entry.get("sha256")
        results.append(ChecksumResult(a.path.relative_to(bundle.root).as_posix(), a.model, a.format, a.precision,
                                      expected if isinstance(expected, str) else None, sha256_path(a.path)))
    return results


# ----------------------------------------------------------------------------------------------- running

def _outside_box_diffs(a: np.ndarray, b: np.ndarray, box: tuple[int, int, int, int]) -> int:
    """Values that differ between two frames outside ``box`` (which must hold none)."""
    x0, y0, x1, y1 = box
    n = int(np.count_nonzero(a[:y0] != b[:y0])) + int(np.count_nonzero(a[y1:] != b[y1:]))
    n += int(np.count_nonzero(a[y0:y1, :x0] != b[y0:y1, :x0]))
    n += int(np.count_nonzero(a[y0:y1, x1:] != b[y0:y1, x1:]))
    return n


@dataclass
class _Tracker:
    """Streaming comparison state of one candidate."""

    result: CandidateResult
    profile: Profile
    output: ErrorStats = field(default_factory=lambda: ErrorStats("float"))
    final: ErrorStats = field(default_factory=lambda: ErrorStats("uint8"))
    worst_key: tuple[float, float] = (-1.0, -1.0)
    worst: tuple[int, np.ndarray, np.ndarray, tuple[int, int, int, int]] | None = None

    def add(self, i: int, box: tuple[int, int, int, int], ref_pred: np.ndarray, pred: np.ndarray,
            ref_frame: np.ndarray, frame: np.ndarray, keep_worst: bool) -> None:
        self.output.update(ref_pred[None], np.asarray(pred, dtype=np.float32)[None], [i])
        x0, y0, x1, y1 = box
        r, c = ref_frame[y0:y1, x0:x1], frame[y0:y1, x0:x1]
        self.final.update(r[None], c[None], [i], offset=(y0, x0, 0))
        self.result.outside_box_diffs += _outside_box_diffs(ref_frame, frame, box)
        self.result.frames += 1
        if keep_worst:
            d = np.abs(r.astype(np.int16) - c.astype(np.int16))
            key = (float(d.max()), float(d.sum()))
            if key > self.worst_key:
                self.worst_key = key
                self.worst = (i, ref_frame.copy(), frame.copy(), box)

    def finish(self) -> None:
        for stage, stats in ((MODEL_OUTPUT, self.output), (FINAL_FRAME, self.final)):
            if stats.count == 0:
                continue
            limits = self.profile.limits(stage)
            summary = stats.summary()
            self.result.stages.append(StageResult(stage, stats.kind, summary, limits.as_dict(),
                                                  limits.check(summary)))


@dataclass
class AudioInput:
    """The feature rows a run uses, where they came from, and (from audio) the encoder windows that made them."""

    features: np.ndarray
    source: dict[str, str]
    mel_windows: np.ndarray | None = None


def resolve_audio_input(mode: str, features: str | os.PathLike[str] | None, audio: str | os.PathLike[str] | None,
                        encoder: str | os.PathLike[str] | None, progress: bool = False) -> AudioInput:
    """Feature rows from ``--features F`` or from ``--audio A --encoder ENC`` (exactly one; ParityError otherwise).

    Audio goes through framegen's mel (:mod:`framegen.toolkit.audio`) and the PyTorch audio encoder checkpoint (the
    reference encoder), which makes 'ave' features only.
    """
    if (features is None) == (audio is None):
        raise ParityError("give either --features F or --audio A with --encoder ENC")
    if features is not None:
        if encoder is not None:
            raise ParityError("--encoder goes with --audio, not --features")
        from framegen.toolkit.features import load_features

        return AudioInput(load_features(features, mode), {"features": os.fspath(features)})
    if encoder is None:
        raise ParityError("--audio needs --encoder ENC (the audio encoder checkpoint, audio_visual_encoder.pth)")
    if mode != "ave":
        raise ParityError(f"--audio makes 'ave' features; the bundle's generator is {mode!r} mode (use --features)")
    from framegen.models.checkpoint import load_audio_encoder, sha256_file
    from framegen.toolkit.audio import (
        AudioError,
        ave_features,
        decode_audio,
        mel_windows,
        melspectrogram,
        torch_encoder_fn,
    )

    wav = decode_audio(audio)
    try:
        mel = melspectrogram(wav)
        windows = mel_windows(mel)
    except ValueError as exc:
        raise AudioError(f"{audio}: {exc}") from None
    feats = ave_features(mel, torch_encoder_fn(load_audio_encoder(encoder)), progress=progress)
    return AudioInput(feats, {"audio": os.fspath(audio), "encoder": os.fspath(encoder),
                              "encoder_sha256": sha256_file(encoder),
                              "embedding_from": "PyTorch audio encoder checkpoint (fp32, CPU)"}, windows)


def run_parity(bundle: str | os.PathLike[str], checkpoint: str | os.PathLike[str], template: Any,
               features: np.ndarray, *, candidates: list[Candidate] | None = None, frames: int = 8,
               start_frame: int = 0, batch: int | None = None, heatmaps: str | os.PathLike[str] | None = None,
               progress: bool = False, inputs: dict[str, Any] | None = None) -> ParityReport:
    """Compare every candidate with the PyTorch fp32 reference on ``frames`` output frames.

    ``template`` is a :class:`framegen.toolkit.preprocess.PreparedTemplate`, ``features`` the (N, F) feature rows of the
    bundle's mode; ``candidates`` default to :func:`plan_candidates`'s choice. ``start_frame`` is the template frame
    the ping-pong walk starts at (as in ``framegen render``); ``batch`` overrides each backend's default batch.
    ``heatmaps``: a directory that receives one PNG per candidate (reference | candidate | amplified difference of
    its worst frame). Candidates that cannot be opened or fail while running are failures in the report; bad
    usage (unknown backend, unreadable bundle, a checkpoint that does not fit) raises.
    """
    from framegen.models.bundle import load_bundle
    from framegen.runtimes.registry import open_backend
    from framegen.runtimes.spec import OpenRequest
    from framegen.toolkit.render import iter_frames

    if frames < 1:
        raise ParityError(f"--frames must be at least 1, got {frames}")
    b = load_bundle(bundle)
    notes: list[str] = []
    if candidates is None:
        candidates, notes = plan_candidates(b)
    if not candidates:
        raise ParityError("no candidate backend to compare")
    count = min(frames, int(features.shape[0]))
    if count < frames:
        notes.append(f"features hold {features.shape[0]} frames; comparing {count}, not {frames}")
    checksums = verify_checksums(b)
    expected_ckpt = (b.manifest.get("source") or {}).get("sha256")
    if isinstance(expected_ckpt, str):
        from framegen.models.checkpoint import sha256_file

        if sha256_file(checkpoint) != expected_ckpt:
            notes.append(f"{checkpoint}: not the checkpoint the bundle was exported from (sha256 differs from the "
                         f"manifest's source); expect every candidate to fail")

    tensor = [c for c in candidates if c.io == "tensor"]
    image = [c for c in candidates if c.io == "image"]
    unknown = [c.label for c in candidates if c.io not in ("tensor", "image")]
    if unknown:
        raise ParityError(f"unknown I/O variant in {', '.join(unknown)}")
    reference = open_backend(REFERENCE, OpenRequest(checkpoint=checkpoint, mode=b.mode, precision="fp32"))
    trackers: list[_Tracker] = []
    streams: dict[int, Any] = {}
    backends: dict[int, Any] = {}
    keep_worst = heatmaps is not None
    try:
        for k, cand in enumerate(tensor):
            result = CandidateResult(cand, profile_for(cand.precision, cand.io).name)
            try:
                be = open_backend(cand.backend, OpenRequest(checkpoint=checkpoint, bundle=b.root,
                                                            precision=cand.precision, mode=b.mode))
            except FramegenError as exc:
                result.error = f"cannot open: {exc}"
                trackers.append(_Tracker(result, profile_for(cand.precision, cand.io)))
                continue
            # The profile follows what the backend really runs (e.g. TensorRT may build fp16 from an fp32 model).
            prof = profile_for(be.info.precision, cand.io)
            result.profile = prof.name
            result.info = be.info.as_dict()
            trackers.append(_Tracker(result, prof))
            backends[k] = be
            streams[k] = iter_frames(template, features, be, batch=batch,
                                     start_frame=start_frame, max_frames=count)
        ref_stream = iter_frames(template, features, reference, batch=batch,
                                 start_frame=start_frame, max_frames=count)
        order: list[dict[str, int]] = []
        ref_n, ref_sum, ref_sq = 0, 0.0, 0.0  # the reference output's spread: is it non-trivial?
        bar = _Progress(count * (1 + len(streams)), progress)
        with bar:
            for i, tindex, prepared, ref_pred, ref_frame in ref_stream:
                bar.advance()
                order.append({"frame": int(i), "template_index": int(tindex)})
                ref_n += ref_pred.size
                ref_sum += float(ref_pred.sum(dtype=np.float64))
                ref_sq += float(np.square(ref_pred, dtype=np.float64).sum())
                for k in list(streams):
                    tr = trackers[k]
                    try:
                        ci, _, _, pred, frame = next(streams[k])
                    except StopIteration:
                        tr.result.error = f"stopped after {tr.result.frames} of {count} frames"
                        _drop(k, streams, backends)
                        continue
                    except FramegenError as exc:
                        tr.result.error = f"failed at frame {i}: {exc}"
                        _drop(k, streams, backends)
                        continue
                    bar.advance()
                    if ci != i:
                        tr.result.error = f"yielded frame {ci} where the reference has frame {i}"
                        _drop(k, streams, backends)
                        continue
                    tr.add(int(i), prepared.box, ref_pred, pred, ref_frame, frame, keep_worst)
        if ref_n:
            mean = ref_sum / ref_n
            std = math.sqrt(max(ref_sq / ref_n - mean * mean, 0.0))
            if std < _MIN_REFERENCE_STD:
                notes.append(f"the reference output is nearly constant (std {std:.3f}): parity proves little; use a "
                             f"trained or calibrated checkpoint")
        for tr in trackers:
            tr.finish()
            if tr.result.error is None and tr.result.frames < len(order):
                tr.result.error = f"compared {tr.result.frames} of {len(order)} frames"
        if heatmaps is not None:
            from framegen.toolkit.heatmap import write_heatmap

            out_dir = Path(heatmaps)
            out_dir.mkdir(parents=True, exist_ok=True)
            for tr in trackers:
                if tr.worst is None:
                    continue
                i, ref_frame, frame, box = tr.worst
                name = tr.result.candidate.label.replace("/", "_") + ".png"
                path = write_heatmap(out_dir / name, ref_frame, frame, box,
                                     f"{tr.result.candidate.label} vs {REFERENCE}/fp32, frame {i}")
                tr.result.heatmap = os.fspath(path)
    finally:
        for k in list(streams):
            _drop(k, streams, backends)
        reference.close()
    results = [t.result for t in trackers]
    if image:
        # Image-I/O variants take uint8 crops, not the float Backend interface: their own runner, same frames.
        from framegen.toolkit.image_parity import run_image_parity

        results += run_image_parity(b.root, checkpoint, template, features, image, frames=count,
                                    start_frame=start_frame)
    return ParityReport(reference=reference.info.as_dict(), inputs=dict(inputs or {}, bundle=os.fspath(b.root),
                                                                      checkpoint=os.fspath(checkpoint)),
                        frames=order, checksums=checksums, candidates=results, notes=notes)


def _drop(k: int, streams: dict[int, Any], backends: dict[int, Any]) -> None:
    """Stop candidate ``k``'s frame stream (its pipeline threads) and close its backend."""
    stream = streams.pop(k, None)
    if stream is not None and hasattr(stream, "close"):
        stream.close()
    be = backends.pop(k, None)
    if be is not None:
        be.close()


class _Progress:
    """A transient rich progress bar on stderr over backend-frames, or nothing."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled, self.bar, self.task = total, enabled, None, None

    def __enter__(self) -> _Progress:
        if self.enabled:
            from framegen.toolkit.console import err
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("parity"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                console=err, transient=True)
            self.bar.__enter__()
            self.task = self.bar.add_task("parity", total=self.total)
        return self

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.advance(self.task, 1)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)


# ----------------------------------------------------------------------------------------------- output

def _cell(v: Any, kind: str = "g") -> str:
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    if isinstance(v, float) and (math.isinf(v) or math.isnan(v)):
        return str(v)
    if kind == "signed_pct":
        return f"{100 * v:+.2f}%"
    if kind == "pct":
        return f"{100 * v:.3g}%"
    if isinstance(v, float) and (math.isinf(v) or math.isnan(v)):
        return str(v)
    if kind == "db":
        return f"{v:.1f}"
    if kind == "cos":
        return f"{v:.6f}"
    if isinstance(v, float) and v != 0 and (abs(v) < 1e-2 or abs(v) >= 1e4):
        return f"{v:.2e}"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


_SHORT = {MODEL_OUTPUT: "output", FINAL_FRAME: "frame"}


def wide_console() -> Any:
    """The stdout console, or, when stdout is not a terminal (CI logs, pipes), one 150 columns wide so that result
    tables are not cut to rich's default of 80."""
    from framegen.toolkit.console import out
    from rich.console import Console

    return out if out.is_terminal else Console(width=max(out.width, 150), highlight=False)


def print_report(report: ParityReport) -> None:
    """The console table (rich, stdout) and one line per failure."""
    from framegen.toolkit.console import out
    from rich import box
    from rich.table import Table

    ref = report.reference
    out.print(f"reference: {ref.get('name')} fp32 ({ref.get('source')}); {len(report.frames)} frames, template "
              f"frames {', '.join(str(f['template_index']) for f in report.frames[:12])}"
              f"{' ...' if len(report.frames) > 12 else ''}; output = model output (float, 0..1), frame = final "
              f"frame inside the crop box (uint8 levels)", soft_wrap=True)
    for c in report.checksums:
        if not c.ok:
            out.print(f"[red]checksum mismatch[/red] {c.path}", soft_wrap=True)
    table = Table(title="parity against PyTorch fp32", title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1))
    for col in ("backend", "stage", "max |Δ|", "mean |Δ|", "p99 |Δ|", "PSNR dB", "bias", "spread", "≠", ">1",
                "worst: frame @ index", "result"):
        table.add_column(col, justify="left" if col in ("backend", "stage", "result") else "right", no_wrap=True)
    for cand in report.candidates:
        if cand.error and not cand.stages:
            table.add_row(cand.candidate.label, "-", *["-"] * 9, "[red]FAIL[/red]")
            continue
        for s in cand.stages:
            m = s.metrics
            worst = f"{m['worst_frame']} @ {m['worst_index']}" if m["max_abs"] else "-"
            ok = s.passed and not cand.error and not (s.stage == FINAL_FRAME and cand.outside_box_diffs)
            table.add_row(cand.candidate.label, _SHORT.get(s.stage, s.stage), _cell(m["max_abs"]),
                          _cell(m["mean_abs"]), _cell(m["p99_abs"]), _cell(m["psnr_db"], "db"), _cell(m["bias"]),
                          _cell(m["spread_change"], "signed_pct"), _cell(m["share_diff"], "pct"),
                          _cell(m["share_diff_gt1"], "pct") if s.kind == "uint8" else "-", worst,
                          "[green]pass[/green]" if ok else "[red]FAIL[/red]")
    wide_console().print(table)
    for note in report.notes:
        from framegen.toolkit.console import note as _note

        _note(note)
    failures = report.failures()
    for line in failures:
        out.print(f"[red]FAIL[/red] {line}", soft_wrap=True)
    if report.passed:
        out.print(f"[green]parity: all {len(report.candidates)} candidate(s) pass[/green]")
    else:
        out.print(f"[red]parity: {len(failures)} failure(s)[/red]")
