"""A Triton Inference Server model repository from a bundle: ``generator/`` and ``audio_encoder/``, each with a
``config.pbtxt`` and a version folder ``1/model.onnx``, for the ONNX Runtime backend of the NGC Triton containers.

Every config names the contract's tensors (``image``/``audio`` -> ``output``, ``mel`` -> ``embedding``) with their
per-sample dims (Triton's batch axis is implied by ``max_batch_size``), turns on the dynamic batcher (preferred sizes
and a queue delay) and places the instances (``instance_group``). TensorRT through ONNX Runtime's TensorRT execution
provider is optional (``tensorrt_fp16``: the ``optimization.execution_accelerators`` block of Triton's ORT backend,
precision FP16, engine cache on).

Each config is checked before anything is written: parsed into Triton's own ``ModelConfig`` protobuf (shipped by
``tritonclient``), then held against the ONNX file it serves (names, dims, a dynamic batch axis). The repository is
built in a hidden sibling and renamed into place only when complete, so a failure leaves nothing.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from framegen.exporters.errors import ExportError
from framegen.models.atomic import atomic_output
from framegen.models.bundle import load_bundle
from framegen.models.contract import (
    ENC_INPUT,
    ENC_MEL_WINDOW,
    ENC_OUTPUT,
    FEATURE_WIDTH,
    GEN_AUDIO,
    GEN_IMAGE,
    GEN_OUTPUT,
    INNER_SIZE,
    MEL,
    TRITON_PARAM_MODE,
    TRITON_PARAM_PRECISION,
    audio_shape,
)

#: model names in the repository (the contract's model kinds)
GENERATOR = "generator"
AUDIO_ENCODER = "audio_encoder"
PLATFORM = "onnxruntime_onnx"
MODEL_FILE = "model.onnx"
CONFIG = "config.pbtxt"
#: ``parameters`` every config carries, so that a client (the ``triton`` backend) learns what the server runs
PARAM_MODE = TRITON_PARAM_MODE
PARAM_PRECISION = TRITON_PARAM_PRECISION
INSTANCE_KINDS = ("KIND_GPU", "KIND_CPU", "KIND_AUTO")


@dataclass(frozen=True)
class TritonOptions:
    """How the models are batched and placed. Defaults suit one GPU serving many live streams: frames of up to 16
    streams batched per execution, waiting at most 2 ms for company (a frame is 40 ms at 25 fps)."""

    max_batch_size: int = 16
    preferred_batch_sizes: tuple[int, ...] = (4, 8, 16)
    max_queue_delay_us: int = 2000
    instance_kind: str = "KIND_GPU"
    instance_count: int = 1
    gpus: tuple[int, ...] = ()
    tensorrt_fp16: bool = False
    #: TensorRT workspace and engine cache (inside the serving container) when ``tensorrt_fp16`` is on
    trt_workspace_bytes: int = 1 << 30
    trt_cache_path: str = "/tmp/framegen-trt"
    extra_parameters: dict[str, str] = field(default_factory=dict)

    def check(self) -> None:
        """One-line :class:`ExportError` for options Triton would refuse or that make no sense."""
        if self.max_batch_size < 1:
            raise ExportError(f"triton: max_batch_size {self.max_batch_size} must be at least 1")
        bad = [b for b in self.preferred_batch_sizes if not 1 <= b <= self.max_batch_size]
        if bad:
            raise ExportError(f"triton: preferred batch sizes {bad} outside 1..max_batch_size "
                              f"{self.max_batch_size}")
        if self.max_queue_delay_us < 0:
            raise ExportError(f"triton: max_queue_delay_us {self.max_queue_delay_us} must be 0 or more")
        if self.instance_kind not in INSTANCE_KINDS:
            raise ExportError(f"triton: instance kind {self.instance_kind!r}; expected {', '.join(INSTANCE_KINDS)}")
        if self.instance_count < 1:
            raise ExportError(f"triton: instance count {self.instance_count} must be at least 1")
        if self.tensorrt_fp16 and self.instance_kind == "KIND_CPU":
            raise ExportError("triton: TensorRT runs on GPU instances; KIND_CPU cannot take tensorrt_fp16")


def model_tensors(kind: str, mode: str) -> tuple[list[tuple[str, tuple[int, ...]]], list[tuple[str, tuple[int, ...]]]]:
    """Per-sample (batch axis left out) input and output names and dims of a model kind, from the contract."""
    if kind == GENERATOR:
        return ([(GEN_IMAGE, (6, INNER_SIZE, INNER_SIZE)), (GEN_AUDIO, tuple(audio_shape(mode)))],
                [(GEN_OUTPUT, (3, INNER_SIZE, INNER_SIZE))])
    if kind == AUDIO_ENCODER:
        return [(ENC_INPUT, (1, int(MEL["n_mels"]), ENC_MEL_WINDOW))], [(ENC_OUTPUT, (FEATURE_WIDTH,))]
    raise ExportError(f"triton: unknown model kind {kind!r}; expected {GENERATOR} or {AUDIO_ENCODER}")


def _tensor_block(key: str, tensors: list[tuple[str, tuple[int, ...]]]) -> str:
    items = ",\n".join(f'  {{\n    name: "{n}"\n    data_type: TYPE_FP32\n    dims: [ {", ".join(map(str, d))} ]\n  }}'
                       for n, d in tensors)
    return f"{key} [\n{items}\n]\n"


def config_text(kind: str, mode: str, precision: str = "fp32", options: TritonOptions | None = None) -> str:
    """The ``config.pbtxt`` of one model (text format of Triton's ``ModelConfig``)."""
    opts = options or TritonOptions()
    opts.check()
    inputs, outputs = model_tensors(kind, mode)
    parts = [f'name: "{kind}"\nplatform: "{PLATFORM}"\nmax_batch_size: {opts.max_batch_size}\n',
             "version_policy: { latest: { num_versions: 1 } }\n",
             _tensor_block("input", inputs), _tensor_block("output", outputs)]
    preferred = ", ".join(map(str, opts.preferred_batch_sizes))
    parts.append("dynamic_batching {\n"
                 + (f"  preferred_batch_size: [ {preferred} ]\n" if preferred else "")
                 + f"  max_queue_delay_microseconds: {opts.max_queue_delay_us}\n}}\n")
    gpus = f"\n    gpus: [ {', '.join(map(str, opts.gpus))} ]" if opts.gpus else ""
    parts.append(f"instance_group [\n  {{\n    kind: {opts.instance_kind}\n    count: {opts.instance_count}{gpus}\n"
                 "  }\n]\n")
    if opts.tensorrt_fp16:
        trt = {"precision_mode": "FP16", "max_workspace_size_bytes": str(opts.trt_workspace_bytes),
               "trt_engine_cache_enable": "1", "trt_engine_cache_path": opts.trt_cache_path}
        params = "\n".join(f'        parameters {{ key: "{k}" value: "{v}" }}' for k, v in trt.items())
        parts.append("optimization {\n  execution_accelerators {\n    gpu_execution_accelerator: [\n"
                     f'      {{\n        name: "tensorrt"\n{params}\n      }}\n    ]\n  }}\n}}\n')
    params = {PARAM_MODE: mode, PARAM_PRECISION: precision, **opts.extra_parameters}
    parts.extend(f'parameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}\n' for k, v in params.items())
    return "".join(parts)


def parse_config(text: str, where: str) -> Any:
    """``text`` parsed into Triton's ``ModelConfig`` protobuf (``tritonclient.grpc.model_config_pb2``), or a one-line
    :class:`ExportError` naming ``where`` and what the parser refused."""
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError as exc:
        raise ExportError(f"{where}: validating a Triton config needs tritonclient[grpc] "
                          f"(pip install 'framegen[serve]'): {exc}") from None
    try:
        return text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise ExportError(f"{where}: not a valid Triton ModelConfig ({exc})") from None


def check_config(config: Any, kind: str, mode: str, where: str) -> None:
    """Hold a parsed ``ModelConfig`` against the contract: name, platform, tensor names, dims and dtypes, batching."""
    problems = []
    if config.name != kind:
        problems.append(f"name {config.name!r} is not {kind!r}")
    if config.platform != PLATFORM:
        problems.append(f"platform {config.platform!r} is not {PLATFORM!r}")
    if config.max_batch_size < 1:
        problems.append("max_batch_size must be at least 1 (the contract's batch axis)")
    inputs, outputs = model_tensors(kind, mode)
    for label, want, got in (("input", inputs, config.input), ("output", outputs, config.output)):
        have = [(t.name, tuple(t.dims)) for t in got]
        if have != [(n, d) for n, d in want]:
            problems.append(f"{label}s {have} are not the contract's {want}")
        problems += [f"{label} {t.name!r} is not TYPE_FP32" for t in got if t.data_type != 11]  # TYPE_FP32
    batcher = config.dynamic_batching
    if not config.HasField("dynamic_batching"):
        problems.append("no dynamic_batching")
    elif any(b > config.max_batch_size for b in batcher.preferred_batch_size):
        problems.append(f"preferred_batch_size {list(batcher.preferred_batch_size)} exceeds max_batch_size "
                        f"{config.max_batch_size}")
    if problems:
        raise ExportError(f"{where}: {'; '.join(problems)}")


def check_onnx(path: Path, kind: str, mode: str) -> None:
    """The ONNX file has the contract's tensor names and per-sample dims, with a dynamic batch axis (which
    ``max_batch_size`` > 0 needs)."""
    import onnx

    try:
        model = onnx.load(os.fspath(path), load_external_data=False)
    except Exception as exc:  # a truncated or foreign file
        raise ExportError(f"{path}: cannot read the ONNX model ({exc})") from None
    inputs, outputs = model_tensors(kind, mode)
    for label, want, values in (("inputs", inputs, model.graph.input), ("outputs", outputs, model.graph.output)):
        init = {i.name for i in model.graph.initializer}
        have = []
        for v in values:
            if v.name in init:
                continue
            dims = v.type.tensor_type.shape.dim
            batch = dims[0] if dims else None
            if batch is None or (batch.HasField("dim_value") and not batch.dim_param):
                raise ExportError(f"{path}: {v.name!r} has a fixed batch axis; Triton batching needs a dynamic one")
            have.append((v.name, tuple(d.dim_value for d in dims[1:])))
        if have != list(want):
            raise ExportError(f"{path}: ONNX {label} {have} are not the contract's {list(want)}")


@dataclass(frozen=True)
class RepositoryModel:
    """One model to put in a repository: its kind, the ONNX file (with its sibling external-data files, if any)
    and what it computes."""

    kind: str
    onnx: Path
    mode: str
    precision: str


def bundle_models(bundle: str | os.PathLike[str], precision: str | None = None) -> list[RepositoryModel]:
    """The generator (and the audio encoder, when the bundle holds one) ONNX artifacts of ``precision`` (default:
    fp32 when the bundle holds it, else fp16)."""
    b = load_bundle(bundle)
    if precision is None:
        precision = "fp32" if b.has(GENERATOR, "onnx", "fp32") or not b.has(GENERATOR, "onnx", "fp16") else "fp16"
    models = [RepositoryModel(GENERATOR, b.find(GENERATOR, "onnx", precision).path, b.mode, precision)]
    for prec in (precision, "fp32", "fp16"):
        if b.has(AUDIO_ENCODER, "onnx", prec):
            models.append(RepositoryModel(AUDIO_ENCODER, b.find(AUDIO_ENCODER, "onnx", prec).path, "ave", prec))
            break
    return models


def check_target(out: str | os.PathLike[str], force: bool = False) -> Path:
    """Refuse an output that exists (unless ``force``) or that is something other than a model repository."""
    dest = Path(out)
    if dest.exists() and not force:
        raise ExportError(f"{dest}: already exists (use --force to replace it)")
    if dest.exists() and (not dest.is_dir() or any(
            p.is_dir() and not (p / CONFIG).is_file() for p in dest.iterdir() if not p.name.startswith("."))):
        raise ExportError(f"{dest}: exists and is not a Triton model repository; refusing to replace it")
    return dest


def precheck(out: str | os.PathLike[str], mode: str, options: TritonOptions | None = None,
             force: bool = False) -> None:
    """Everything :func:`write_repository` checks that needs no ONNX file: the target, the options and every
    config parsed and held against the contract (``export --triton`` runs this before the slow export)."""
    opts = options or TritonOptions()
    opts.check()
    check_target(out, force)
    for kind, kind_mode in ((GENERATOR, mode), (AUDIO_ENCODER, "ave")):
        where = f"{out}/{kind}/{CONFIG}"
        check_config(parse_config(config_text(kind, kind_mode, "fp32", opts), where), kind, kind_mode, where)


def write_repository(bundle: str | os.PathLike[str], out: str | os.PathLike[str], *, precision: str | None = None,
                     options: TritonOptions | None = None, force: bool = False,
                     progress: Callable[[str], None] | None = None) -> Path:
    """Write a Triton model repository for a bundle's generator (and audio encoder) at ``out``.

    Each ``config.pbtxt`` is parsed into Triton's ``ModelConfig`` and checked against the contract and its ONNX file
    before the repository is renamed into place; any failure raises :class:`ExportError` and leaves nothing at
    ``out``. ``force`` replaces an existing repository.
    """
    say = progress or (lambda _msg: None)
    opts = options or TritonOptions()
    opts.check()
    dest = check_target(out, force)
    models = bundle_models(bundle, precision)
    with atomic_output(dest, directory=True) as work:
        for m in models:
            text = config_text(m.kind, m.mode, m.precision, opts)
            where = f"{dest}/{m.kind}/{CONFIG}"
            check_config(parse_config(text, where), m.kind, m.mode, where)
            check_onnx(m.onnx, m.kind, m.mode)
            version = work / m.kind / "1"
            version.mkdir(parents=True)
            shutil.copyfile(m.onnx, version / MODEL_FILE)
            for extra in _external_data(m.onnx):
                shutil.copyfile(extra, version / extra.name)
            (work / m.kind / CONFIG).write_text(text)
            say(f"triton: {m.kind} ({m.precision}, batch <= {opts.max_batch_size}, {opts.instance_kind} x "
                f"{opts.instance_count}{', TensorRT fp16' if opts.tensorrt_fp16 else ''})")
        validate_repository(work, names=[m.kind for m in models])
    say(f"wrote Triton model repository {dest}")
    return dest


def validate_repository(root: str | os.PathLike[str], names: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse every ``<model>/config.pbtxt`` of a repository into ``ModelConfig`` and check it against the contract
    (mode from its ``framegen_mode`` parameter) and its version folder; returns ``{model name: ModelConfig}``."""
    base = Path(root)
    found = sorted(p.parent.name for p in base.glob(f"*/{CONFIG}"))
    if names is not None and sorted(names) != found:
        raise ExportError(f"{base}: holds models {found}, expected {sorted(names)}")
    if not found:
        raise ExportError(f"{base}: no <model>/{CONFIG} in it; not a Triton model repository")
    configs = {}
    for name in found:
        where = base / name / CONFIG
        cfg = parse_config(where.read_text(), str(where))
        mode = cfg.parameters[PARAM_MODE].string_value if PARAM_MODE in cfg.parameters else "ave"
        check_config(cfg, name, mode, str(where))
        versions = [p for p in (base / name).iterdir() if p.is_dir() and p.name.isdigit()]
        if not any((v / MODEL_FILE).is_file() for v in versions):
            raise ExportError(f"{base / name}: no version folder with {MODEL_FILE}")
        configs[name] = cfg
    return configs


def _external_data(path: Path) -> list[Path]:
    """Files an ONNX model keeps its weights in beside itself (``location`` of external tensors)."""
    import onnx

    model = onnx.load(os.fspath(path), load_external_data=False)
    names = {e.value for t in model.graph.initializer for e in t.external_data if e.key == "location"}
    return [path.parent / n for n in sorted(names)]


