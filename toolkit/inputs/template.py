"""SyncTalk_2D template datasets: ``full_body_img/N.jpg`` (or ``.png``) paired with ``landmarks/N.lms``.

Real datasets are messy (ffmpeg numbers frames from 1 while landmark files start at 0, files go missing, JPEGs get
truncated), so :func:`open_template` pairs images and landmark files in numeric order, parses and validates every
landmark file up front, and fails with one line naming the file(s) when the dataset cannot be used as it is.
Images are decoded on demand (:meth:`Template.read_image`); ``toolkit.template_check.inspect_template`` decodes them
all.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from framegen.models.contract import LMS_POINTS
from framegen.models.errors import FramegenError

IMAGE_DIR = "full_body_img"
LANDMARK_DIR = "landmarks"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
LANDMARK_SUFFIX = ".lms"

_NUMBERED = re.compile(r"^(\d+)(\.[A-Za-z]+)$")
_JPEG_SOI = b"\xff\xd8"
_JPEG_EOI = b"\xff\xd9"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"IEND\xaeB`\x82"
# Encoders and cameras may pad after the end marker; a truncated file has no end marker at all.
_TRAILER_SLACK = 4096


class TemplateError(FramegenError):
    """A template dataset that cannot be read as it is (the message names the file or files)."""


@dataclass(frozen=True)
class TemplateFrame:
    """One paired frame: position ``index`` in the template, its image and its landmark file."""

    index: int
    image: Path
    landmarks: Path


def read_landmarks(path: str | os.PathLike[str]) -> np.ndarray:
    """Parse a SyncTalk_2D ``.lms`` file into a ``(110, 2)`` int32 array.

    Like SyncTalk_2D, each ``x y`` line is parsed as float32 and then cast to int32 (truncation toward zero).
    Blank lines are ignored; anything else that is not exactly 110 pairs of finite numbers is a
    :class:`TemplateError` naming the file (and the line).
    """
    p = Path(path)
    try:
        text = p.read_bytes().decode("latin-1")
    except OSError as exc:
        raise TemplateError(f"{p}: cannot read landmark file ({exc.strerror or exc})") from None
    rows = [(no, line.split()) for no, line in enumerate(text.splitlines(), 1) if line.strip()]
    if len(rows) != LMS_POINTS:
        raise TemplateError(f"{p}: {len(rows)} landmark lines, expected {LMS_POINTS} 'x y' lines")
    for no, tokens in rows:
        if len(tokens) != 2:
            raise TemplateError(f"{p}: line {no} has {len(tokens)} values, expected 2 ('x y')")
    try:
        values = np.array([tokens for _, tokens in rows], dtype=np.float32)
    except ValueError:
        no, bad = next((no, t) for no, tokens in rows for t in tokens if not _is_number(t))
        raise TemplateError(f"{p}: line {no}: {bad[:20]!r} is not a number") from None
    finite = np.isfinite(values).all(axis=1) & (np.abs(values) < 2.0**31).all(axis=1)
    if not finite.all():
        no = rows[int(np.argmin(finite))][0]
        raise TemplateError(f"{p}: line {no}: landmark coordinate is not a finite int32 value")
    return values.astype(np.int32)


def _is_number(token: str) -> bool:
    try:
        np.float32(token)
    except ValueError:
        return False
    return True


def numbered_files(folder: Path, suffixes: tuple[str, ...]) -> tuple[dict[int, Path], list[str]]:
    """``{number: path}`` of ``N.<suffix>`` files in ``folder``, and the names of other (ignored) visible files."""
    found: dict[int, Path] = {}
    ignored: list[str] = []
    for entry in os.scandir(folder):
        if entry.name.startswith("."):
            continue
        m = _NUMBERED.match(entry.name)
        if not m or m.group(2).lower() not in suffixes or not entry.is_file():
            ignored.append(entry.name)
            continue
        number = int(m.group(1))
        if number in found:
            raise TemplateError(f"{folder}: both {found[number].name} and {entry.name} claim frame {number}")
        found[number] = Path(entry.path)
    return found, sorted(ignored)


def describe_numbering(numbers: list[int]) -> str:
    """``"0..522"`` for a contiguous run, ``"0..530 with gaps (523 files)"`` otherwise."""
    if not numbers:
        return "none"
    first, last = numbers[0], numbers[-1]
    if last - first + 1 == len(numbers):
        return f"{first}..{last}"
    return f"{first}..{last} with gaps ({len(numbers)} files)"


def _names(paths: list[Path], root: Path, limit: int = 3) -> str:
    shown = ", ".join(str(p.relative_to(root)) for p in paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def _check_complete(data: bytes, path: Path) -> None:
    """Reject truncated JPEG/PNG files, which some decoders would silently pad with grey."""
    if not data:
        raise TemplateError(f"{path}: empty image file")
    tail = data[-_TRAILER_SLACK:]
    if data.startswith(_JPEG_SOI) and _JPEG_EOI not in tail:
        raise TemplateError(f"{path}: truncated JPEG (no end-of-image marker)")
    if data.startswith(_PNG_SIGNATURE) and _PNG_IEND not in tail:
        raise TemplateError(f"{path}: truncated PNG (no IEND chunk)")


def decode_image(path: Path) -> np.ndarray:
    """Decode an image file to BGR uint8 HxWx3 exactly as ``cv2.imread(path)`` does, or raise TemplateError."""
    import cv2

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TemplateError(f"{path}: cannot read image ({exc.strerror or exc})") from None
    _check_complete(data, path)
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise TemplateError(f"{path}: cannot be decoded as an image")
    return image


class Template:
    """A paired, validated template dataset. Landmarks are parsed at open; images are decoded on demand."""

    def __init__(self, root: Path, frames: list[TemplateFrame], landmarks: np.ndarray, width: int, height: int,
                 warnings: list[str], numbering: dict[str, str]) -> None:
        self.root = root
        self.frames = frames
        self.width = width
        self.height = height
        self.warnings = warnings
        self.numbering = numbering
        self._landmarks = landmarks
        self._landmarks.flags.writeable = False

    def __len__(self) -> int:
        return len(self.frames)

    def __repr__(self) -> str:
        return f"Template({str(self.root)!r}, frames={len(self)}, size={self.width}x{self.height})"

    def read_image(self, i: int) -> np.ndarray:
        """Frame ``i`` as BGR uint8 (H, W, 3); TemplateError naming the file if unreadable or of another size."""
        path = self.frames[i].image
        image = decode_image(path)
        if image.shape[:2] != (self.height, self.width):
            raise TemplateError(f"{path}: {image.shape[1]}x{image.shape[0]} but the template's frames are "
                                f"{self.width}x{self.height}")
        return image

    def read_landmarks(self, i: int) -> np.ndarray:
        """Frame ``i``'s landmarks, (110, 2) int32 (parsed once at open; read-only)."""
        return self._landmarks[i]

    @property
    def landmarks(self) -> np.ndarray:
        """All landmarks, (N, 110, 2) int32, read-only."""
        return self._landmarks

    def relative(self, path: Path) -> str:
        """``path`` relative to the template root, with forward slashes (as printed in reports)."""
        return path.relative_to(self.root).as_posix()

    def check_images(self, workers: int = 2) -> dict[int, str]:
        """Decode every image; ``{index: error message}`` for those that cannot be used (empty when all are fine)."""
        def check(i: int) -> str | None:
            try:
                self.read_image(i)
            except TemplateError as exc:
                return str(exc)
            return None

        # cv2 decodes without the GIL, so a couple of threads use both cores.
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            results = list(pool.map(check, range(len(self))))
        return {i: msg for i, msg in enumerate(results) if msg is not None}


def open_template(path: str | os.PathLike[str]) -> Template:
    """Open a SyncTalk_2D template directory (``full_body_img/`` + ``landmarks/``) and pair its frames.

    Images and landmark files are paired in numeric order when their counts agree (a warning says so when their
    numbers differ, e.g. images 1..523 with landmarks 0..522). Every landmark file is parsed here and the first
    image is decoded for the frame size; other images are decoded by :meth:`Template.read_image`.
    """
    root = Path(path)
    if not root.is_dir():
        raise TemplateError(f"{root}: not a directory (a template has {IMAGE_DIR}/ and {LANDMARK_DIR}/)")
    image_dir, lms_dir = root / IMAGE_DIR, root / LANDMARK_DIR
    for folder in (image_dir, lms_dir):
        if not folder.is_dir():
            raise TemplateError(f"{folder}: missing (a template has {IMAGE_DIR}/N.jpg and {LANDMARK_DIR}/N.lms)")
    images, ignored_images = numbered_files(image_dir, IMAGE_SUFFIXES)
    lms_files, ignored_lms = numbered_files(lms_dir, (LANDMARK_SUFFIX,))
    if not images:
        raise TemplateError(f"{image_dir}: no numbered images (N.jpg or N.png)")
    if not lms_files:
        raise TemplateError(f"{lms_dir}: no numbered landmark files (N.lms)")
    image_numbers, lms_numbers = sorted(images), sorted(lms_files)
    if len(image_numbers) != len(lms_numbers):
        detail = []
        no_lms = [images[n] for n in image_numbers if n not in lms_files]
        no_image = [lms_files[n] for n in lms_numbers if n not in images]
        if no_lms:
            detail.append(f"no landmark file for {_names(no_lms, root)}")
        if no_image:
            detail.append(f"no image for {_names(no_image, root)}")
        raise TemplateError(f"{root}: {len(images)} images but {len(lms_files)} landmark files"
                            + (f" ({'; '.join(detail)})" if detail else ""))

    warnings: list[str] = []
    for folder, ignored in ((image_dir, ignored_images), (lms_dir, ignored_lms)):
        if ignored:
            warnings.append(f"ignored {len(ignored)} file(s) in {folder.name}/ without an N.ext name "
                            f"(e.g. {ignored[0]})")
    numbering = {"images": describe_numbering(image_numbers), "landmarks": describe_numbering(lms_numbers)}
    if image_numbers != lms_numbers:
        warnings.append(f"images are numbered {numbering['images']} but landmarks {numbering['landmarks']}: "
                        f"paired in numeric order ({IMAGE_DIR}/{images[image_numbers[0]].name} with "
                        f"{LANDMARK_DIR}/{lms_files[lms_numbers[0]].name}, ...)")
    elif "gaps" in numbering["images"]:
        warnings.append(f"frames are numbered {numbering['images']}: paired in numeric order")

    pairs = zip(image_numbers, lms_numbers, strict=True)
    frames = [TemplateFrame(k, images[a], lms_files[b]) for k, (a, b) in enumerate(pairs)]
    parsed, bad = [], []
    for frame in frames:
        try:
            parsed.append(read_landmarks(frame.landmarks))
        except TemplateError as exc:
            bad.append(str(exc))
    if bad:
        more = f" (and {len(bad) - 1} more malformed landmark files)" if len(bad) > 1 else ""
        raise TemplateError(bad[0] + more)
    first = decode_image(frames[0].image)
    height, width = first.shape[:2]
    return Template(root, frames, np.stack(parsed), width, height, warnings, numbering)
