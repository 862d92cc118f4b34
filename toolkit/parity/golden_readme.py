"""The README written into every golden directory: what each file holds and how a port is checked against it."""

from __future__ import annotations

from typing import Any


def readme_text(index: dict[str, Any]) -> str:
    """The README a golden directory carries: what the files are, how to read them, how to write a candidate."""
    cv = index.get("opencv", {})
    lines = [
        "# framegen golden vectors",
        "",
        f"Every stage of SyncTalk_2D's per-frame pipeline ({index['mode']} mode) for {len(index['cases'])} output "
        f"frames, made by framegen from the bundle `{index['source'].get('bundle')}`. A port (Go, Swift, ...) reads "
        "the inputs, runs its own implementation, writes its outputs in the same layout, and `framegen golden check` "
        "says which stage first departs from the reference.",
        "",
        "## Files",
        "",
        "- `index.json`: the stages (name, dtype, shape, meaning), the cases (output frame `frame`, template frame "
        "`template_index`, `crop_box`, which feature rows feed the audio window), the tolerances per profile and "
        "the full I/O contract (`contract`).",
        "- `case_NNN/<stage>.bin`: raw values, little-endian, C order (row-major), no header. Size = product of the "
        "shape x the dtype's size.",
        "",
        "| stage | dtype | shape | meaning |",
        "| --- | --- | --- | --- |",
    ]
    for s in index["stages"]:
        lines.append(f"| `{s['name']}` | {s['dtype']} | {'x'.join(map(str, s['shape']))} | {s['meaning']} |")
    producer = index["model_output_from"]
    lines += [
        "",
        f"`model_output` was computed by `{producer['backend']}` ({producer['precision']}"
        + (f", {producer['artifact']}" if "artifact" in producer else "") + ").",
        "",
        "Output frame `i` uses template frame `template_index` (SyncTalk_2D's ping-pong walk: frame 0 uses template "
        "frame 1) and feature rows `i-8 .. i+7` (`audio_rows`; rows listed in `padding_rows` lie outside the "
        "features and are zeros).",
    ]
    if index["input"] == "audio":
        lines += [
            "With audio input, `mel_window` is the encoder input behind feature row `i` (`mel_window_index`), and "
            "`embedding` the encoder's output for it (= feature row `i`). SyncTalk_2D repeats the first and last "
            "embedding once, so feature row `j` comes from mel window `clip(j - 1, 0, W - 1)`; `row_mel_windows` "
            "lists it for each row of the audio window.",
        ]
    lines += [
        "",
        "## Reading a case",
        "",
        "Python: `np.fromfile('case_000/model_output.bin', '<f4').reshape(3, 320, 320)`.",
        "",
        "Go: `binary.Read(f, binary.LittleEndian, make([]float32, 3*320*320))` (uint8 stages: read the bytes).",
        "",
        "Swift: `Data(contentsOf:)` then `withUnsafeBytes { Array($0.bindMemory(to: Float32.self)) }` "
        "(Apple platforms are little-endian).",
        "",
        "## Writing a candidate",
        "",
        "Make a directory `C` with the same case directories and file names, holding your port's values for any "
        "subset of the stages, in the same dtype, shape and byte order (`C/case_000/crop_328.bin`, ...). To test one "
        "stage in isolation, feed it the golden inputs of the stage before (e.g. paste back the golden "
        "`model_output` to test your post-processing alone). Then:",
        "",
        "```",
        "framegen golden check G --candidate C --bundle B [--profile fp32|fp16] [--json report.json]",
        "```",
        "",
        "`B` is the bundle the golden was written from: with it the check runs the bundle's models on *your own* "
        "`model_input`, `audio_window` and `mel_window`. The table lists the stages in pipeline order; the verdict "
        "line names the first one that departs: fix that one first. Exit status 0 when every present stage passes, "
        "1 when one fails, 2 when `C` holds no stage file. `examples/numpy_port/port.py` in framegen writes a "
        "complete candidate; docs/CONTRACT.md §7 describes this format with a worked example.",
        "",
        "## How stages are compared",
        "",
        "Every stage is judged where its own computation happens (`on own` in the table): the check applies the "
        "reference step to *your own* earlier stages (the golden ones where you provide none) and compares your "
        "value with that; with `--bundle` the model and the audio encoder are run on your own inputs too. So a "
        "stage fails where your port computes it wrongly, not where an earlier difference (a resize one level off, "
        "your model's fp16 arithmetic) shows up. The inputs (`frame`, `landmarks`) and the stages without a "
        "reference step (`mel_window`, `audio_window`; `embedding` and `model_output` without `--bundle`) are "
        "compared with the golden values (`on gold`); when one of them fails after a failing stage upstream, it "
        "is marked `inherited`. The `e2e` column is each stage's distance to the golden value, beside the limit "
        "composed from the upstream stages' own limits (`e2e ≤`; `--json` has both).",
        "",
        "Choose the profile by the precision your port runs its models in (`fp32`, or `fp16` for e.g. Core ML on the "
        "GPU / Neural Engine); it sets the limits of `model_output` (and of `embedding` with audio input). Integer "
        "stages and copies are exact. The two cubic resamplings (`crop_328`, `final_frame`) may differ by one level "
        "on up to 5 % of values: these vectors were resized by OpenCV "
        + f"{cv.get('version', '?')} in {cv.get('cubic_uint8', '?')} arithmetic"
        + " (a float64 resize lands one level off on about 0.001 % of values, OpenCV's fixed-point path on about "
        "3 %); nearest-neighbour or bilinear resampling, another cubic kernel or RGB order fail. `frame` is exact: "
        + f"it was decoded by {cv.get('image_decoder', 'OpenCV')}"
        + "; another JPEG decoder differs by up to ~35 levels, so decode PNG templates, use that decoder, or test "
        "the later stages from the golden `frame` (leave `frame` out of the candidate). `pred_320` must truncate "
        "`x * 255` (float32), not round. `final_frame` is compared inside the crop box and must equal `frame` "
        "outside it. The limits:",
        "",
    ]
    for prof, stages in index["tolerances"].items():
        lines.append(f"- `{prof}`: " + "; ".join(
            f"{name} " + (", ".join(f"{k} {v:g}" for k, v in lim.items()) if lim.get("max_abs", 1) != 0 else "exact")
            for name, lim in stages.items()))
    lines += ["", "See docs/PARITY.md in framegen for how they were measured.", ""]
    return "\n".join(lines)
