"""``framegen template inspect``: a template checked frame by frame (images decode, crop boxes stay inside the frame).

It sits above both :mod:`framegen.toolkit.inputs.template` (reading a template) and
:mod:`framegen.toolkit.inputs.preprocess`
(SyncTalk_2D's crop box), so neither needs the other.
"""

from __future__ import annotations

import os
from typing import Any

from framegen.toolkit.common.files import write_png
from framegen.toolkit.inputs.preprocess import PreprocessError, check_box, crop_box
from framegen.toolkit.inputs.template import open_template


def inspect_template(path: str | os.PathLike[str], *, skip_bad_boxes: bool = False,
                     check_images: bool = True) -> dict[str, Any]:
    """Everything ``framegen template inspect`` reports, as JSON-able data (paths relative to the template).

    ``usable`` is false when an image cannot be decoded, or when a crop box leaves the frame (unless
    ``skip_bad_boxes``, which turns those into warnings as long as one frame remains). Raises TemplateError only
    when the template cannot be opened at all.
    """
    template = open_template(path)
    image_errors = template.check_images() if check_images else {}
    frames, errors, warnings = [], [], list(template.warnings)
    usable_frames = 0
    for frame in template.frames:
        box = crop_box(template.read_landmarks(frame.index))
        entry: dict[str, Any] = {"index": frame.index, "image": template.relative(frame.image),
                                 "landmarks": template.relative(frame.landmarks), "box": list(box)}
        problem = image_errors.get(frame.index)
        if problem:
            errors.append(problem)
        else:
            try:
                check_box(box, template.width, template.height, f"frame {frame.index} ({entry['image']})")
                usable_frames += 1
            except PreprocessError as exc:
                problem = str(exc)
                (warnings if skip_bad_boxes else errors).append(problem)
        if problem:
            entry["error"] = problem
        frames.append(entry)
    if usable_frames == 0 and not errors:
        errors.append(f"{template.root}: no frame has a crop box inside the frame")
    return {
        "root": str(template.root),
        "count": len(template),
        "width": template.width,
        "height": template.height,
        "numbering": template.numbering,
        "usable": not errors and usable_frames > 0,
        "usable_frames": usable_frames,
        "warnings": warnings,
        "errors": errors,
        "frames": frames,
    }


#: crops on a preview contact sheet
PREVIEW_TILES = 16


def write_preview(directory: str | os.PathLike[str], report: dict[str, Any], path: str | os.PathLike[str]
                  ) -> dict[str, Any]:
    """A contact sheet of up to 16 usable frames' crops with their boxes drawn, spread over the template, written
    to ``path`` (PNG); returns ``{path, frames}`` (no frame when none is usable, and nothing written)."""
    from framegen.toolkit.inputs.preprocess import contact_sheet

    good = [f["index"] for f in report["frames"] if "error" not in f]
    if not good:
        return {"path": None, "frames": []}
    step = max(1, len(good) / PREVIEW_TILES)
    picks = sorted({good[int(k * step)] for k in range(min(PREVIEW_TILES, len(good)))})
    write_png(path, contact_sheet(open_template(directory), picks))
    return {"path": os.fspath(path), "frames": picks}
