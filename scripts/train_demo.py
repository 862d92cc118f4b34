"""Train the demo generator: SyncTalk_2D's own 'ave' U-Net, on synthetic talking clips it makes itself.

    python scripts/train_demo.py --work /tmp/train-demo --out demo.npz --recipe hour-wc  # the packaged weights
    python scripts/train_demo.py --work /tmp/train-demo --out demo.npz --steps 800 ...   # one phase

The setup is SyncTalk_2D's: for frame k of a clip, the input is a reference crop (another frame) beside frame k's
crop under the mask rectangle, plus the 16-frame audio window of frame k; the target is frame k's crop. The audio
features come from the demo's own seeded audio encoder (``init_audio_encoder(0)``), so ``framegen demo`` feeds the
generator exactly the features it was trained on. Half the references are another frame of the clip (SyncTalk_2D's
choice); the other half show frame k's own head pose with another frame's mouth, which is what a template frame is
at inference time (its own pose, a mouth unrelated to the speech), and teaches the network to ignore the
reference's mouth.

Loss: L1 over the crop plus L1 over the mouth box (weight ``--mouth-weight``); no perceptual network (none can be
downloaded here). ``--sync-weight W`` adds a lip-sync signal trained here: a small CNN learns, in seconds, to read
the mouth opening from the mouth box of the training frames (their ground truth), then, frozen, reads the opening
the generator draws, whose squared error from the true opening is added with weight W (``--sync-ramp R``: rising
from 0 over the first share R of the steps). ``--edge-weight E`` weighs the strips the mask leaves at the crop's
edges 1 + E times, ``--edge-bce B`` adds cross-entropy on the output logits there, and ``--far-bce B`` adds it
wherever a pixel is far off; docs/DEMO.md ("The specks at the crop's edges") says what each did. ``--logit-penalty
W`` adds W x (|logit| - 8)^2 beyond +-8, which keeps the sigmoid out of saturation (docs/DEMO.md, "Training").
``--window S`` trains on S x S windows of the crops, on the 32-pixel grid of the audio branch's 10x10 map and mostly
over the mouth (:func:`forward_window`), a step at 0.35-0.45 of a whole crop's time (docs/DEMO.md, "The hour recipes").

bf16 autocast and channels_last on a CPU with AMX/AVX-512-BF16, CUDA when present. Seeded
(data and sampling), resumable (``--work`` holds the data cache and the latest state; rerun the same command), and
it prints the time it took. The result is stored compactly (fp16 .npz, no pickle) and loads as an ordinary fp32
SyncTalk_2D state dict (``framegen.models.demo.load_demo_generator``).
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from espeak_speech import tts_speech
from framegen.models.contract import MASK_COLS, MASK_ROWS
from framegen.models.demo import load_compact_state, save_compact_state
from framegen.models.init import init_audio_encoder
from framegen.models.unet import Model
from framegen.toolkit.inputs.audio import torch_encoder_fn
from framegen.toolkit.inputs.features import audio_windows
from framegen.toolkit.inputs.speech import synthesize_speech
from framegen.toolkit.inputs.talking import (
    mouth_boxes_open,
    same_pose_other_mouth,
    talking_clip,
    talking_clip_for,
)
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

#: Training utterances use seeds TRAIN_SEED0 + c (TTS_SEED0 + c for eSpeak clips); evaluation uses seeds far from
#: them (scripts/eval_demo.py).
TRAIN_SEED0 = 1000
TTS_SEED0 = 5000
#: Output logits within +-LOGIT_CAP reach 0.09-254.9 of 255 levels after the sigmoid: enough for any target here.
LOGIT_CAP = 8.0


def voice(rng: np.random.Generator, augment: bool = False) -> dict[str, float]:
    """A random voice: pitch, tempo, peak level and noise floor, so the network sees more than one speaker. With
    ``augment``, also the vocal tract's length, breathiness, spectral tilt, a wider pitch and level range and a
    noisier room: speech further from one synthesiser's, so that loudness, not the timbre, drives the mouth."""
    if not augment:
        return {"f0": float(rng.uniform(85, 240)), "tempo": float(rng.uniform(0.7, 1.4)),
                "level": float(rng.uniform(0.2, 0.95)), "room": float(rng.uniform(0.0005, 0.012))}
    return {"f0": float(rng.uniform(70, 300)), "tempo": float(rng.uniform(0.6, 1.5)),
            "level": float(np.exp(rng.uniform(np.log(0.04), np.log(0.98)))),
            "room": float(np.exp(rng.uniform(np.log(0.0003), np.log(0.03)))), "tract": float(rng.uniform(0.8, 1.25)),
            "breath": float(rng.choice([0.0, rng.uniform(0.1, 0.9)])), "tilt": float(rng.uniform(-0.9, 0.9))}


def tts_room(rng: np.random.Generator) -> dict[str, float]:
    """A recording condition for a text-to-speech clip: level, noise floor, reverberation (half the clips) and a
    microphone's tilt."""
    return {"level": float(np.exp(rng.uniform(np.log(0.04), np.log(0.98)))),
            "room": float(np.exp(rng.uniform(np.log(0.0003), np.log(0.02)))),
            "reverb": float(rng.uniform(0.1, 0.5)) if rng.random() < 0.5 else 0.0,
            "tilt": float(rng.uniform(-0.7, 0.7))}


def build_data(args: argparse.Namespace) -> dict[str, np.ndarray]:
    """Render the training clips once and cache them in ``--work``."""
    tag = ("-augment" if args.augment else "") + (f"-tts{args.tts:g}" if args.tts else "")
    cache = args.work / f"data-{args.clips}x{args.clip_seconds:g}s-seed{args.seed}{tag}-v2.npz"
    if cache.exists():
        with np.load(cache) as z:
            return {k: z[k] for k in z.files}
    encode = torch_encoder_fn(init_audio_encoder(0))
    rng = np.random.default_rng(args.seed)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("target", "other", "box", "window", "clip", "opening",
                                                           "box_open")}
    t0 = time.time()
    tts_clips = round(args.tts * args.clips)
    for c in range(args.clips):
        if c < tts_clips:  # eSpeak NG speech: real consonants and prosody, the mouth from its phonemes
            tts = tts_speech(args.clip_seconds, seed=TTS_SEED0 + args.seed + c, **tts_room(rng))
            clip = talking_clip_for(tts.wav, tts.opening, tts.spread, encode, track_seed=TRAIN_SEED0 + c)
        else:
            speech = synthesize_speech(args.clip_seconds, seed=TRAIN_SEED0 + args.seed + c,
                                       **voice(rng, args.augment))
            clip = talking_clip(speech, encode, track_seed=TRAIN_SEED0 + c)
        parts["target"].append(clip.crops)
        parts["other"].append(same_pose_other_mouth(TRAIN_SEED0 + c, clip.opening, clip.spread, seed=c))
        parts["box"].append(clip.mouth_boxes)
        parts["window"].append(audio_windows(clip.features, np.arange(len(clip.crops)), "ave"))
        parts["clip"].append(np.full(len(clip.crops), c, dtype=np.int32))
        parts["opening"].append(clip.opening.astype(np.float32))
        parts["box_open"].append(mouth_boxes_open(TRAIN_SEED0 + c, len(clip.crops)))
        print(f"clip {c + 1}/{args.clips}: {len(clip.crops)} frames ({time.time() - t0:.0f} s)", flush=True)
    data = {k: np.concatenate(v) for k, v in parts.items()}
    tmp = cache.with_name(f".{cache.name}.{os.getpid()}.partial.npz")
    np.savez(tmp, **data)
    tmp.replace(cache)
    return data


def batch_tensors(data: dict[str, np.ndarray], idx: np.ndarray, rng: np.random.Generator,
                  device: torch.device, mouth_weight: float, masked_from: str = "target",
                  edge_weight: float = 0.0) -> tuple[torch.Tensor, ...]:
    """Inputs (reference + masked, audio), the target and the per-pixel loss weight for frames ``idx``.

    ``masked_from="other"`` masks frame k's head pose drawn with another frame's mouth instead of frame k itself.
    SyncTalk_2D masks the target, but its mask (cv2 rectangle 5, 5, 310, 305) leaves 5-pixel strips at the crop's
    sides, where the jaw line crosses them and moves with the opening: the target's own strips tell the network how
    open the mouth is, a shortcut that at inference reads the template's mouth instead of the speech's.

    ``edge_weight`` adds to the loss weight of those strips: they are under 8 % of the crop, so plain L1 lets a few
    saturated pixels there (a green speck at the crop's left edge) cost almost nothing, while every frame shows them."""
    target = data["target"][idx]
    starts = np.flatnonzero(np.r_[True, data["clip"][1:] != data["clip"][:-1]])
    ref = np.empty_like(target)
    for b, k in enumerate(idx):
        if rng.random() < 0.5:
            ref[b] = data["other"][k]
        else:  # another frame of the same clip
            c = data["clip"][k]
            lo = starts[c]
            hi = starts[c + 1] if c + 1 < len(starts) else len(data["clip"])
            ref[b] = data["target"][rng.integers(lo, hi)]
    tgt = torch.from_numpy(target).permute(0, 3, 1, 2).float().div_(255)
    refs = torch.from_numpy(ref).permute(0, 3, 1, 2).float().div_(255)
    masked = tgt.clone() if masked_from == "target" else (
        torch.from_numpy(data["other"][idx]).permute(0, 3, 1, 2).float().div_(255))
    masked[:, :, MASK_ROWS, MASK_COLS] = 0
    weight = torch.full((len(idx), 1, tgt.shape[2], tgt.shape[3]), 1.0 + edge_weight)
    weight[:, :, MASK_ROWS, MASK_COLS] = 1.0
    for b, (x0, y0, x1, y1) in enumerate(data["box"][idx]):
        weight[b, :, y0:y1, x0:x1] += mouth_weight
    audio = torch.from_numpy(data["window"][idx])
    x = torch.cat([refs, masked], 1).to(device).contiguous(memory_format=torch.channels_last)
    return x, audio.to(device), tgt.to(device), weight.to(device)


FAR_BCE_FROM = 0.25  # --far-bce acts on pixels off by more than this (64 levels) in any channel
MOUTH_H, MOUTH_W = 48, 64  # the mouth box resampled to this size for the opening critic
CELL = 32  # one bottleneck cell: the U-Net halves 320x320 five times, to the audio branch's 10x10


def window_offsets(boxes: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Top-left corners (row, col) of ``size`` x ``size`` training windows, one per frame, on the CELL grid.

    Three in four are placed over the mouth box (centred, then moved by up to a cell), the rest anywhere, so the
    whole face is still seen."""
    cells = 320 // CELL - size // CELL
    out = np.empty((len(boxes), 2), dtype=np.int64)
    for b, (x0, y0, x1, y1) in enumerate(boxes):
        if rng.random() < 0.75:
            centre = np.array([(y0 + y1) / 2, (x0 + x1) / 2]) - size / 2
            out[b] = np.clip(np.round(centre / CELL) + rng.integers(-1, 2, 2), 0, cells)
        else:
            out[b] = rng.integers(0, cells + 1, 2)
    return out * CELL


def forward_window(model: Model, x: torch.Tensor, audio_feat: torch.Tensor, corners: np.ndarray) -> torch.Tensor:
    """``model``'s forward on windows of the 320x320 inputs whose corners lie on the CELL grid.

    The audio branch's 10x10 map is fused cell by cell with the image's bottleneck, so a window's bottleneck meets
    exactly the audio cells it covers: those are cut out, and the rest is the generator's own forward. Only the
    window's borders (zero padding where the full crop has neighbours) and the bilinear upsampling's corner
    alignment differ from the full crop, which the full-size phases that follow see. A step of 192x192 windows takes
    0.35-0.45 of a step of whole crops (docs/DEMO.md)."""
    x1 = model.inc(x)
    x2 = model.down1(x1)
    x3 = model.down2(x2)
    x4 = model.down3(x3)
    x5 = model.down4(x4)
    x6 = model.down5(x5)
    audio = model.audio_model(audio_feat)
    n = x6.shape[2]
    cells = [audio[b, :, r // CELL:r // CELL + n, c // CELL:c // CELL + n] for b, (r, c) in enumerate(corners)]
    x6 = model.fuse_conv(torch.cat([x6, torch.stack(cells)], dim=1))
    y = model.up1(x6, x5)
    y = model.up2(y, x4)
    y = model.up3(y, x3)
    y = model.up4(y, x2)
    y = model.up5(y, x1)
    return torch.sigmoid(model.outc(y))


def mouth_crops(images: torch.Tensor, boxes: np.ndarray) -> torch.Tensor:
    """The ``boxes`` (x0, y0, x1, y1 per image, crop pixels) of ``images`` (B, 3, H, W) resampled to
    MOUTH_H x MOUTH_W, differentiably (the generator's loss flows through it)."""
    b, _, h, w = images.shape
    bx = torch.as_tensor(boxes, dtype=torch.float32, device=images.device)
    theta = torch.zeros(b, 2, 3, device=images.device)
    theta[:, 0, 0] = (bx[:, 2] - bx[:, 0]) / w
    theta[:, 0, 2] = (bx[:, 0] + bx[:, 2]) / w - 1
    theta[:, 1, 1] = (bx[:, 3] - bx[:, 1]) / h
    theta[:, 1, 2] = (bx[:, 1] + bx[:, 3]) / h - 1
    grid = torch.nn.functional.affine_grid(theta, [b, 3, MOUTH_H, MOUTH_W], align_corners=False)
    return torch.nn.functional.grid_sample(images.float(), grid, align_corners=False)


def opening_critic(data: dict[str, np.ndarray], device: torch.device, seed: int) -> torch.nn.Module:
    """A small CNN that reads the mouth opening from the mouth box of a drawn frame, trained on the training
    frames' own ground truth (the last clip held out to report its accuracy). Frozen, it gives the generator a
    loss on the opening it draws, which L1 on the pixels does not: a hedged half-open mouth costs little L1 but
    reads as the wrong opening. Nothing downloaded; it knows only the demo's face."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, 2, 1), torch.nn.ReLU(), torch.nn.Conv2d(16, 32, 3, 2, 1), torch.nn.ReLU(),
        torch.nn.Conv2d(32, 64, 3, 2, 1), torch.nn.ReLU(), torch.nn.Conv2d(64, 64, 3, 2, 1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(64, 1)).to(device)
    held = data["clip"] == data["clip"].max()
    train_idx, test_idx = np.flatnonzero(~held), np.flatnonzero(held)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3)
    rng = np.random.default_rng(seed)

    def batch(idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        img = torch.from_numpy(data["target"][idx]).permute(0, 3, 1, 2).float().div_(255).to(device)
        return mouth_crops(img, data["box_open"][idx]), torch.from_numpy(data["opening"][idx]).to(device)

    for _ in range(600):
        x, y = batch(rng.choice(train_idx, 64))
        loss = ((net(x)[:, 0] - y) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        x, y = batch(test_idx)
        pred = net(x)[:, 0].cpu().numpy()
    r = float(np.corrcoef(pred, y.cpu().numpy())[0, 1])
    print(f"opening critic: r {r:.3f} with the true opening on a held-out clip ({len(test_idx)} frames)", flush=True)
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def train(args: argparse.Namespace) -> None:
    """Train, checkpointing to ``--work/state.pt`` every ``--save-every`` steps; resume from it when present."""
    args.work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    data = build_data(args)
    n = len(data["target"])
    critic = opening_critic(data, device, args.seed) if args.sync_weight > 0 else None
    model = Model(6, "ave").to(device).to(memory_format=torch.channels_last)
    logits: list[torch.Tensor] = []
    if args.edge_bce > 0 or args.far_bce > 0 or args.logit_penalty > 0:  # outc's result, before the sigmoid
        model.outc.register_forward_hook(lambda _m, _i, out: logits.append(out))
    strips = None
    if args.edge_bce > 0:
        strips = torch.ones(1, 1, 320, 320, device=device)
        strips[:, :, MASK_ROWS, MASK_COLS] = 0
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    step = 0
    state_path = args.work / "state.pt"
    spent = 0.0
    if state_path.exists():
        state = torch.load(state_path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step, spent = state["step"], state["seconds"]
        print(f"resumed at step {step} ({spent / 60:.1f} min spent)", flush=True)
    elif args.init is not None:  # a second phase: start from trained weights (a compact .npz), fresh optimiser
        model.load_state_dict(load_compact_state(args.init))
        print(f"starting from {args.init}", flush=True)
    rng = np.random.default_rng([args.seed, step])
    model.train()
    amp = torch.bfloat16 if not cuda or torch.cuda.is_bf16_supported() else torch.float16
    ema = None
    t_start = time.time()
    columns = (TextColumn("[bold]train"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns) as bar:
        task = bar.add_task("train", total=args.steps, completed=step, loss=float("nan"))
        while step < args.steps:
            lr = args.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / args.steps)))
            for g in opt.param_groups:
                g["lr"] = lr
            idx = rng.integers(0, n, args.batch)
            x, audio, tgt, weight = batch_tensors(data, idx, rng, device, args.mouth_weight, args.masked_from,
                                                  args.edge_weight)
            logits.clear()
            if args.window:
                corners = window_offsets(data["box"][idx], args.window, rng)
                s = args.window
                x, tgt, weight = (torch.stack([t[b, :, r:r + s, c:c + s] for b, (r, c) in enumerate(corners)])
                                  for t in (x, tgt, weight))
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=amp):
                out = forward_window(model, x, audio, corners) if args.window else model(x, audio)
            loss = ((out.float() - tgt).abs() * weight).mean()
            if strips is not None:
                # A pixel whose sigmoid has saturated gets almost no gradient from L1 on the output (a green speck
                # at the crop's left edge outlived 400 steps of --edge-weight 4); cross-entropy on the logits
                # pulls it back in proportion to its error.
                bce = torch.nn.functional.binary_cross_entropy_with_logits(logits[-1].float(), tgt, reduction="none")
                loss = loss + args.edge_bce * (bce * strips).sum() / (strips.sum() * bce.shape[0] * bce.shape[1])
            if args.far_bce > 0:
                # --edge-bce alone moved the speck onto the cheek, where L1 again could not reach it: here the
                # cross-entropy follows the far-off pixels wherever they are, and leaves the near ones to L1
                far = ((out.float() - tgt).abs().amax(1, keepdim=True) > FAR_BCE_FROM).float().detach()
                bce = torch.nn.functional.binary_cross_entropy_with_logits(logits[-1].float(), tgt, reduction="none")
                loss = loss + args.far_bce * (bce * far).mean()
            if args.logit_penalty > 0:
                # hour-w's first phase grew logits up to 4,841: a saturated sigmoid learns nothing from L1 and
                # amplifies fp32 rounding 12x (docs/DEMO.md); beyond LOGIT_CAP a logit is pulled back quadratically
                over = (logits[-1].float().abs() - LOGIT_CAP).clamp(min=0)
                loss = loss + args.logit_penalty * (over ** 2).mean()
            if critic is not None:
                read = critic(mouth_crops(out.float(), data["box_open"][idx]))[:, 0]
                # from scratch, the critic's reading of a still-blurred mouth means little: its weight ramps in
                ramp = min(1.0, step / (args.sync_ramp * args.steps)) if args.sync_ramp > 0 else 1.0
                loss = loss + ramp * args.sync_weight * ((read - torch.from_numpy(data["opening"][idx]).to(device)) ** 2
                                                  ).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            value = loss.item()
            ema = value if ema is None else 0.95 * ema + 0.05 * value
            bar.update(task, completed=step, loss=ema)
            if step % args.save_every == 0 or step == args.steps:
                tmp = state_path.with_name(f".state.{os.getpid()}.partial")
                torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                            "seconds": spent + time.time() - t_start}, tmp)
                tmp.replace(state_path)
    total = spent + time.time() - t_start
    model.eval()
    save_compact_state(model.float().cpu().state_dict(), args.out)
    device_name = torch.cuda.get_device_name() if cuda else "CPU"
    print(f"trained {args.steps} steps x batch {args.batch} on {device_name} in {total / 60:.1f} min "
          f"(final loss {ema:.4f}) -> {args.out}", flush=True)


#: Whole trainings as phases, each a fine-tune of the one before (flags as on the command line). ``hour-wc`` trains
#: the packaged weights (61.7 minutes from nothing on two CPU cores, docs/DEMO.md); ``shipped`` is the four-phase
#: chain behind the weights packaged before it (phase 4, about 97 minutes). ``hour-b8`` folds phase 2's wider voices
#: into phase 1 and shortens every phase, to fit about an hour; ``hour`` runs the same phases at batch 4 (a step
#: takes half the time, so the hour holds twice the updates; learning rates / sqrt(2)); ``hour-w`` trains its first
#: phase on 192x192 windows of the crops (``--window``: 2.2-2.9x the samples per second); ``hour-wc`` is ``hour-w``
#: with the logits held within +-LOGIT_CAP (``--logit-penalty``). Only ``hour-wc`` matches ``shipped``
#: (docs/DEMO.md, "The hour recipes").
RECIPES: dict[str, list[list[str]]] = {
    "shipped": [
        ["--steps", "800", "--clips", "20"],
        ["--augment", "--steps", "250", "--lr", "1e-3", "--clips", "24", "--seed", "1"],
        ["--augment", "--tts", "0.5", "--clips", "24", "--steps", "1000", "--lr", "7e-4", "--sync-weight", "2",
         "--masked-from", "other", "--seed", "6"],
        ["--augment", "--tts", "0.5", "--clips", "24", "--steps", "400", "--lr", "3e-4", "--sync-weight", "2",
         "--masked-from", "other", "--seed", "7", "--edge-weight", "4", "--far-bce", "10"],
    ],
    "hour": [
        ["--augment", "--batch", "4", "--steps", "800", "--lr", "1.5e-3", "--clips", "20"],
        ["--augment", "--tts", "0.5", "--clips", "24", "--batch", "4", "--steps", "1700", "--lr", "5e-4",
         "--sync-weight", "2", "--masked-from", "other", "--seed", "6"],
        ["--augment", "--tts", "0.5", "--clips", "24", "--batch", "4", "--steps", "500", "--lr", "2e-4",
         "--sync-weight", "2", "--masked-from", "other", "--seed", "7", "--edge-weight", "4", "--far-bce", "10"],
    ],
    "hour-w": [
        ["--augment", "--window", "192", "--steps", "1100", "--lr", "2e-3", "--clips", "20"],
        ["--augment", "--tts", "0.5", "--clips", "24", "--batch", "4", "--steps", "1300", "--lr", "5e-4",
         "--sync-weight", "2", "--masked-from", "other", "--seed", "6"],
        ["--augment", "--tts", "0.5", "--clips", "24", "--batch", "4", "--steps", "500", "--lr", "2e-4",
         "--sync-weight", "2", "--masked-from", "other", "--seed", "7", "--edge-weight", "4", "--far-bce", "10"],
    ],
    "hour-wc": [
        ["--augment", "--window", "192", "--steps", "1100", "--lr", "2e-3", "--clips", "20", "--logit-penalty", "0.01"],
        ["--augment", "--tts", "0.5", "--clips", "24", "--batch", "4", "--steps", "1300", "--lr", "5e-4",
         "--sync-weight", "2", "--masked-from", "other", "--seed", "6", "--logit-penalty", "0.01"],
        ["--augment", "--tts", "0.5", "--clips", "24", "--batch", "4", "--steps", "500", "--lr", "2e-4",
         "--sync-weight", "2", "--masked-from", "other", "--seed", "7", "--edge-weight", "4", "--far-bce", "10",
         "--logit-penalty", "0.01"],
    ],
    "hour-b8": [
        ["--augment", "--steps", "500", "--clips", "20"],
        ["--augment", "--tts", "0.5", "--clips", "24", "--steps", "550", "--lr", "7e-4", "--sync-weight", "2",
         "--masked-from", "other", "--seed", "6"],
        ["--augment", "--tts", "0.5", "--clips", "24", "--steps", "250", "--lr", "3e-4", "--sync-weight", "2",
         "--masked-from", "other", "--seed", "7", "--edge-weight", "4", "--far-bce", "10"],
    ],
}


def run_recipe(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Every phase of ``--recipe`` in turn, in ``--work/phaseN`` (each resumable; a finished phase is skipped), the
    last one's weights written to ``--out``."""
    t0 = time.time()
    init = None
    phases = RECIPES[args.recipe]
    for i, flags in enumerate(phases, 1):
        work = args.work / f"phase{i}"
        out = args.out if i == len(phases) else work / f"phase{i}.npz"
        extra = ["--threads", str(args.threads)] if args.threads else []
        phase = parser.parse_args([*flags, "--work", str(work), "--out", str(out), *extra]
                                  + (["--init", str(init)] if init else []))
        done = work / "done"
        if done.exists() and out.exists():
            print(f"phase {i}/{len(phases)}: done before ({done.read_text().strip()})", flush=True)
        else:
            print(f"phase {i}/{len(phases)}: {' '.join(flags)}", flush=True)
            started = time.time()
            train(phase)
            done.write_text(f"{(time.time() - started) / 60:.1f} min with its data, this run\n")
        init = out
    print(f"recipe {args.recipe}: {len(phases)} phases in {(time.time() - t0) / 60:.1f} min of wall time this run, "
          f"data included -> {args.out}", flush=True)


def main() -> None:
    """Parse the command line and train."""
    from framegen.models.allocator import keep_freed_memory

    keep_freed_memory()  # PyTorch's activations reused, not page-faulted anew (models/allocator.py)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, default=Path("train-demo"), help="data cache and resumable state")
    p.add_argument("--out", type=Path, default=Path("models/data/demo_generator_ave.npz"))
    p.add_argument("--steps", type=int, default=900)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--mouth-weight", type=float, default=4.0)
    p.add_argument("--sync-weight", type=float, default=0.0,
                   help="weight of the opening critic's loss (0: L1 only, as the shipped phases)")
    p.add_argument("--sync-ramp", type=float, default=0.0,
                   help="share of the steps over which the critic's weight rises from 0 (0: full from the start)")
    p.add_argument("--edge-weight", type=float, default=0.0,
                   help="extra loss weight on the crop's strips outside the mask (0: the strips weigh as the rest)")
    p.add_argument("--edge-bce", type=float, default=0.0,
                   help="weight of a cross-entropy loss on the output logits in the strips outside the mask")
    p.add_argument("--far-bce", type=float, default=0.0,
                   help=f"cross-entropy on the output logits, weight B, wherever a pixel is off by > {FAR_BCE_FROM}")
    p.add_argument("--logit-penalty", type=float, default=0.0,
                   help=f"weight of a quadratic penalty on output logits beyond +-{LOGIT_CAP:g} (keeps the sigmoid "
                        "out of saturation)")
    p.add_argument("--masked-from", choices=("target", "other"), default="target",
                   help="the masked image: the target frame (SyncTalk_2D) or its pose with another frame's mouth")
    p.add_argument("--clips", type=int, default=24)
    p.add_argument("--clip-seconds", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-every", type=int, default=25)
    p.add_argument("--augment", action="store_true", help="wider voices (tract, breath, tilt, level, room)")
    p.add_argument("--tts", type=float, default=0.0,
                   help="share of clips spoken by eSpeak NG (scripts/espeak_speech.py; pip install espeakng-loader)")
    p.add_argument("--init", type=Path, default=None, help="start from these weights (.npz), e.g. a fine-tune phase")
    p.add_argument("--window", type=int, default=0,
                   help="train on WINDOW x WINDOW windows of the crops (a multiple of 32), mostly over the mouth; "
                        "0: whole crops")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    p.add_argument("--recipe", choices=sorted(RECIPES), default=None,
                   help="run a whole training, phase after phase, in --work/phaseN (the other flags are the recipe's)")
    args = p.parse_args()
    if args.window and (args.window % CELL or not 0 < args.window < 320):
        p.error(f"--window {args.window}: expected a multiple of {CELL} below 320")
    if args.window and (args.sync_weight or args.edge_bce or args.far_bce):
        p.error("--window trains on parts of the crop: --sync-weight, --edge-bce and --far-bce need whole crops")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.recipe:
        run_recipe(p, args)
    else:
        train(args)


if __name__ == "__main__":
    main()
