"""Reading, recognising and loading SyncTalk_2D checkpoints.

Every failure becomes a :class:`CheckpointError` with one line that names the file and what is wrong.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from framegen.models.audio_encoder import AudioEncoder
from framegen.models.errors import CheckpointError, first_line
from framegen.models.unet import MODES, Model

ENCODER_PREFIX = "audio_encoder."
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net")


def sha256_file(path: str | os.PathLike[str] | LoadedCheckpoint) -> str:
    """Hex sha256 of a file, read in chunks; a :class:`LoadedCheckpoint` gives the digest it was read with."""
    if isinstance(path, LoadedCheckpoint):
        return path.sha256
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True, eq=False)
class LoadedCheckpoint:
    """A checkpoint read once: its path, the sha256 of the bytes read and the state dict parsed from them.

    A job loads it at its entry point and passes it down. It is path-like (``os.fspath`` gives the file), so every
    function that takes a checkpoint path takes it too, and the loaders below use the state it holds instead of
    reading the file again.
    """

    path: Path
    sha256: str
    state: dict[str, torch.Tensor]

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    def __str__(self) -> str:
        return os.fspath(self.path)


def load_checkpoint(path: str | os.PathLike[str] | LoadedCheckpoint) -> LoadedCheckpoint:
    """Read a checkpoint file once: hash the bytes and parse the state dict from the same bytes (given a
    :class:`LoadedCheckpoint`, return it)."""
    if isinstance(path, LoadedCheckpoint):
        return path
    p = _checked_file(Path(path))
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{p}: cannot read it ({exc.strerror or type(exc).__name__})") from None
    return LoadedCheckpoint(p, hashlib.sha256(data).hexdigest(), _parse_state(p, io.BytesIO(data)))


def read_state_dict(path: str | os.PathLike[str] | LoadedCheckpoint) -> dict[str, torch.Tensor]:
    """Load a checkpoint with ``weights_only=True`` and return a flat ``{name: tensor}`` dict.

    Accepts a raw state dict, ``{"state_dict": ...}`` (and a few common wrapper keys) and ``module.``-prefixed
    keys from DataParallel. Anything else is a :class:`CheckpointError` naming the file and the problem. A
    :class:`LoadedCheckpoint` gives its state without reading the file again.
    """
    if isinstance(path, LoadedCheckpoint):
        return path.state
    p = _checked_file(Path(path))
    return _parse_state(p, p)


def _checked_file(p: Path) -> Path:
    if p.is_dir():
        raise CheckpointError(f"{p}: is a directory, not a checkpoint file")
    if not p.is_file():
        raise CheckpointError(f"{p}: no such checkpoint file")
    if p.stat().st_size == 0:
        raise CheckpointError(f"{p}: empty file, not a PyTorch checkpoint")
    return p


def _parse_state(p: Path, source: Path | io.BytesIO) -> dict[str, torch.Tensor]:
    try:
        with warnings.catch_warnings():
            # torch warns about the pickle protocol of non-torch files; the error below says what matters.
            warnings.simplefilter("ignore")
            obj = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:  # arbitrary bytes make torch.load raise almost anything (KeyError for a text file)
        raise CheckpointError(f"{p}: {_load_failure(p, exc)}") from None
    if isinstance(obj, dict):
        for key in _WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, dict) or not obj:
        what = "an empty dict" if isinstance(obj, dict) else f"a {type(obj).__name__}"
        raise CheckpointError(f"{p}: holds {what}, not a state dict")
    bad = next((k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)), None)
    if bad is not None:
        raise CheckpointError(f"{p}: entry {bad!r} is not a tensor ({type(obj[bad]).__name__}); not a state dict")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def _load_failure(path: Path, exc: Exception) -> str:
    """Why ``torch.load`` failed, in words: a refused pickle, truncation, text, or not a torch file at all."""
    message = str(exc)
    if isinstance(exc, pickle.UnpicklingError):
        refused = (re.search(r"Unsupported global: GLOBAL ([\w.]+)", message)
                   or re.search(r"unsupported GLOBAL ([\w.]+)", message))
        if refused:
            return (f"refused: not a plain state dict (it pickles {refused.group(1)}); loading it needs arbitrary "
                    "unpickling, which framegen never does (weights_only=True); re-save it with "
                    "torch.save(model.state_dict())")
    if isinstance(exc, OSError) and not isinstance(exc, zipfile.BadZipFile):
        return f"cannot read it ({exc.strerror or type(exc).__name__})"
    with open(path, "rb") as fh:
        head = fh.read(512)
    if head.startswith(b"PK\x03\x04"):
        if "central directory" in message or "zip archive" in message:
            return "truncated or corrupt PyTorch checkpoint (its zip archive is incomplete)"
        return f"corrupt PyTorch checkpoint ({first_line(exc)})"
    if isinstance(exc, EOFError) or "unexpected EOF" in message:
        return "truncated or corrupt PyTorch checkpoint (the data ends early)"
    if _looks_like_text(head):
        return "a text file, not a PyTorch checkpoint"
    return "not a PyTorch checkpoint (neither torch.save's zip format nor its legacy pickle format)"


def _looks_like_text(head: bytes) -> bool:
    if b"\0" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the end of the sample is still text.
        return exc.start >= len(head) - 3
    return True


def checkpoint_kind(state: dict[str, torch.Tensor]) -> str | None:
    """``'generator'``, ``'audio_encoder'`` or ``None`` judged from the key names."""
    if any(k.startswith("audio_model.") for k in state) or "inc.inconv.0.conv.0.weight" in state:
        return "generator"
    if any(k.startswith(("0.conv_block.", ENCODER_PREFIX + "0.conv_block.")) for k in state):
        return "audio_encoder"
    return None


def possible_modes(state: dict[str, torch.Tensor]) -> list[str]:
    """The generator modes whose tensor shapes this state dict has (ave and hubert are indistinguishable)."""
    w = state.get("audio_model.conv1.conv.0.weight")
    if w is None:
        return []
    if tuple(w.shape) == (512, 256, 1, 1):
        return ["wenet"]
    if tuple(w.shape) == (64, 32, 1, 1):
        return ["ave", "hubert"]
    return []


@dataclass(frozen=True)
class ModeChoice:
    """The mode a generator is loaded in, and whether framegen had to assume it."""

    mode: str
    possible: tuple[str, ...]
    assumed: bool

    @property
    def note(self) -> str | None:
        """A sentence for the user when the mode was assumed, else ``None``."""
        if not self.assumed:
            return None
        others = ", ".join(m for m in self.possible if m != self.mode)
        return (f"mode {self.mode!r} assumed: the checkpoint's shapes also fit {others} "
                f"(they differ only in a stride); name the mode to choose")


def choose_mode(state: dict[str, torch.Tensor], mode: str | None, source: str = "checkpoint") -> ModeChoice:
    """Pick the generator mode: the user's when given (and compatible), else the only or the default one."""
    options = possible_modes(state)
    if mode is not None and mode not in MODES:
        raise CheckpointError(f"{source}: unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    if not options:
        return ModeChoice(mode or "ave", (), False)  # key check will explain what is wrong
    if mode is not None:
        if mode not in options:
            raise CheckpointError(f"{source}: mode {mode!r} does not fit this checkpoint (its shapes fit "
                                  f"{', '.join(options)})")
        return ModeChoice(mode, tuple(options), False)
    return ModeChoice(options[0], tuple(options), len(options) > 1)


def _check_match(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor], source: str, what: str) -> None:
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s), first {missing[0]!r}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s), first {unexpected[0]!r}")
        raise CheckpointError(f"{source}: not a SyncTalk_2D {what}: {'; '.join(parts)}")
    for key, ref in expected.items():
        got = state[key]
        if tuple(got.shape) != tuple(ref.shape):
            raise CheckpointError(f"{source}: shape mismatch for {key!r}: checkpoint {list(got.shape)}, "
                                  f"{what} expects {list(ref.shape)}")
        if got.is_floating_point() != ref.is_floating_point():
            raise CheckpointError(f"{source}: {key!r} has dtype {got.dtype}, expected {ref.dtype}")


def generator_from_state(state: dict[str, torch.Tensor], mode: str | None = None,
                         source: str = "checkpoint") -> Model:
    """Build a generator from a state dict, checking keys and shapes; returns it in eval mode."""
    choice = choose_mode(state, mode, source)
    model = Model(6, choice.mode)
    expected = model.state_dict()
    _check_match(expected, state, source, f"generator ({choice.mode})")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)
    model.eval()
    model.mode = choice.mode
    model.mode_choice = choice
    return model


def load_generator(path: str | os.PathLike[str] | LoadedCheckpoint, mode: str | None = None) -> Model:
    """Load a SyncTalk_2D generator checkpoint in eval mode.

    The result has ``.mode`` and ``.mode_choice`` (with ``.assumed`` and ``.note`` saying whether 'ave' was assumed
    for a checkpoint that could equally be 'hubert').
    """
    state = read_state_dict(path)
    kind = checkpoint_kind(state)
    if kind == "audio_encoder":
        raise CheckpointError(f"{path}: is an audio encoder checkpoint, not a generator")
    return generator_from_state(state, mode, str(path))


def encoder_from_state(state: dict[str, torch.Tensor], source: str = "checkpoint") -> AudioEncoder:
    """Build the audio encoder from a state dict with or without the ``audio_encoder.`` prefix."""
    model = AudioEncoder()
    prefixed = all(k.startswith(ENCODER_PREFIX) for k in state)
    # Compare in the file's own spelling so that the keys an error names are the ones the user can find.
    expected = model.state_dict() if prefixed else encoder_state_for_saving(model)
    _check_match(expected, state, source, "audio encoder")
    if not prefixed:
        state = {ENCODER_PREFIX + k: v for k, v in state.items()}
    model.load_state_dict(state, strict=True)  # copy_ casts e.g. fp16 tensors to the module's fp32
    return model.eval()


def load_audio_encoder(path: str | os.PathLike[str] | LoadedCheckpoint) -> AudioEncoder:
    """Load SyncTalk_2D's ``audio_visual_encoder.pth`` (keys with or without ``audio_encoder.``), in eval mode."""
    state = read_state_dict(path)
    if checkpoint_kind(state) == "generator":
        raise CheckpointError(f"{path}: is a generator checkpoint, not an audio encoder")
    return encoder_from_state(state, str(path))


def encoder_state_for_saving(model: AudioEncoder) -> dict[str, torch.Tensor]:
    """The encoder's state dict as SyncTalk_2D ships it: without the ``audio_encoder.`` prefix."""
    return {k[len(ENCODER_PREFIX):]: v for k, v in model.state_dict().items()}


def inspect_checkpoint(path: str | os.PathLike[str] | LoadedCheckpoint) -> dict[str, object]:
    """Describe a checkpoint: kind, detected mode, possible modes, sizes, dtype and sha256.

    Raises :class:`CheckpointError` when it is neither a generator nor an audio encoder.
    """
    loaded = load_checkpoint(path)
    state = loaded.state
    kind = checkpoint_kind(state)
    info: dict[str, object] = {"path": str(path), "kind": kind}
    if kind == "generator":
        model = generator_from_state(state, None, str(path))
        info["mode"] = model.mode
        info["possible_modes"] = list(model.mode_choice.possible)
        info["mode_assumed"] = model.mode_choice.assumed
        if model.mode_choice.note:
            info["note"] = model.mode_choice.note
    elif kind == "audio_encoder":
        encoder_from_state(state, str(path))
        info["mode"] = "ave"
        info["possible_modes"] = ["ave"]
        info["mode_assumed"] = False
    else:
        first = next(iter(state))
        raise CheckpointError(f"{path}: neither a SyncTalk_2D generator nor an audio encoder (first key {first!r})")
    params = [v for k, v in state.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    info["parameters"] = int(sum(v.numel() for v in params))
    info["tensors"] = len(state)
    info["dtype"] = str(next(v for v in state.values() if v.is_floating_point()).dtype).replace("torch.", "")
    info["file_size"] = Path(path).stat().st_size
    info["sha256"] = loaded.sha256
    return info
