"""The SyncTalk_2D networks and checkpoint loading, proved against the reference names and an independent restatement.

The restatement below is written from ``../shared/reference/ARCHITECTURE.md`` with ``torch.nn.functional`` on the raw
state-dict tensors; it shares no code with ``models.unet`` / ``models.audio_encoder``. Its BatchNorm statistics are
random and data-dependent (see :class:`_FunctionalNet`), so a wrong eps, a swapped mean/var, a missing residual or a
wrong stride shows up as a real difference, not as a saturated sigmoid hiding it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT, fixtures_dir
from framegen.models import AUDIO_SHAPES, MODES, AudioEncoder, CheckpointError, Model, inspect_checkpoint
from framegen.models.checkpoint import encoder_state_for_saving, load_audio_encoder, load_generator
from framegen.models.init import image_like_batch

GENERATOR_PARAMETERS = 12_186_935  # ARCHITECTURE.md, 'ave'
ENCODER_PARAMETERS = 2_812_672  # "2.8 M" in ARCHITECTURE.md


def require_reference(name: str) -> Path:
    """A file from ``../shared/reference`` (beside the shared fixtures), or skip when the checkout has none."""
    base = fixtures_dir()
    ref = (base.parent if base is not None else ROOT.parent / "shared") / "reference"
    path = ref / name
    if not path.is_file():
        pytest.skip(f"shared reference {name} not found in {ref}")
    return path


# ---------------------------------------------------------------------------------------------------------------
# 1. Names and shapes, in order, exactly as SyncTalk_2D's checkpoints have them.


@pytest.fixture(scope="module")
def reference_state_dicts() -> dict[str, list]:
    """``synctalk2d_state_dicts.json``: key -> [[name, shape], ...] in state_dict order."""
    return json.loads(require_reference("synctalk2d_state_dicts.json").read_text())


@pytest.mark.parametrize("mode", MODES)
def test_generator_state_dict_matches_synctalk2d(reference_state_dicts, mode):
    ours = [[k, list(v.shape)] for k, v in Model(6, mode).state_dict().items()]
    assert ours == reference_state_dicts[f"generator_{mode}"]


def test_audio_encoder_state_dict_matches_synctalk2d(reference_state_dicts):
    ours = [[k, list(v.shape)] for k, v in encoder_state_for_saving(AudioEncoder()).items()]
    assert ours == reference_state_dicts["audio_encoder"]
    assert all(k.startswith("audio_encoder.") for k in AudioEncoder().state_dict())


def test_parameter_counts():
    assert sum(p.numel() for p in Model(6, "ave").parameters()) == GENERATOR_PARAMETERS
    assert sum(p.numel() for p in AudioEncoder().parameters()) == ENCODER_PARAMETERS


# ---------------------------------------------------------------------------------------------------------------
# 2. An independent functional restatement (ARCHITECTURE.md), with non-trivial BatchNorm statistics.


class _FunctionalNet:
    """SyncTalk_2D's generator and audio encoder as plain functions of a ``{name: tensor}`` dict.

    With ``fill_stats=True`` every BatchNorm first draws its running statistics from the activations that reach it
    (batch mean shifted by up to 0.3 std, batch variance scaled by 0.6..1.6) and then normalises with them. The
    result is what an eval-mode network with those statistics computes, and the statistics are random yet keep the
    activations in a range where the output is not saturated.
    """

    def __init__(self, state: dict[str, torch.Tensor], gen: torch.Generator, fill_stats: bool) -> None:
        self.sd = state
        self.gen = gen
        self.fill = fill_stats

    def bn(self, name: str, x: torch.Tensor) -> torch.Tensor:
        sd = self.sd
        if self.fill:
            mean = x.mean(dim=(0, 2, 3))
            var = x.var(dim=(0, 2, 3), unbiased=False)
            shift = (torch.rand(mean.shape, generator=self.gen) - 0.5) * 0.6
            sd[f"{name}.running_mean"] = mean + shift * var.sqrt()
            sd[f"{name}.running_var"] = var * (0.6 + torch.rand(var.shape, generator=self.gen))
        return F.batch_norm(x, sd[f"{name}.running_mean"], sd[f"{name}.running_var"], sd[f"{name}.weight"],
                            sd[f"{name}.bias"], training=False, momentum=0.0, eps=1e-5)

    # -- generator building blocks
    def ir(self, name: str, x: torch.Tensor, stride: int, residual: bool) -> torch.Tensor:
        sd = self.sd
        hidden = sd[f"{name}.conv.0.weight"].shape[0]
        y = F.relu(self.bn(f"{name}.conv.1", F.conv2d(x, sd[f"{name}.conv.0.weight"])))
        y = F.conv2d(y, sd[f"{name}.conv.3.weight"], stride=stride, padding=1, groups=hidden)
        y = F.relu(self.bn(f"{name}.conv.4", y))
        y = self.bn(f"{name}.conv.7", F.conv2d(y, sd[f"{name}.conv.6.weight"]))
        return x + y if residual else y

    def double_conv(self, name: str, x: torch.Tensor, stride: int) -> torch.Tensor:
        x = self.ir(f"{name}.double_conv.0", x, stride, residual=False)
        return self.ir(f"{name}.double_conv.1", x, 1, residual=True)

    def up(self, name: str, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        x1 = F.interpolate(x1, scale_factor=2, mode="bilinear", align_corners=True)
        dy, dx = x2.shape[2] - x1.shape[2], x2.shape[3] - x1.shape[3]
        x1 = F.pad(x1, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return self.double_conv(f"{name}.conv", torch.cat([x1, x2], dim=1), 1)

    def audio_branch(self, mode: str, a: torch.Tensor) -> torch.Tensor:
        sd, p = self.sd, "audio_model"
        wenet = mode == "wenet"
        a = self.ir(f"{p}.conv1", a, 1, residual=wenet)
        a = self.ir(f"{p}.conv2", a, 1, residual=wenet)
        stride3 = {"ave": 1, "hubert": 2, "wenet": (1, 2)}[mode]
        a = F.conv2d(a, sd[f"{p}.conv3.weight"], sd[f"{p}.conv3.bias"], stride=stride3, padding=1)
        a = F.relu(self.bn(f"{p}.bn3", a))
        a = self.ir(f"{p}.conv4", a, 1, residual=True)
        a = F.relu(self.bn(f"{p}.bn5", F.conv2d(a, sd[f"{p}.conv5.weight"], sd[f"{p}.conv5.bias"], stride=2,
                                                padding=3)))
        a = self.ir(f"{p}.conv6", a, 1, residual=True)
        return self.ir(f"{p}.conv7", a, 1, residual=True)

    def generator(self, mode: str, x: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        x1 = self.ir("inc.inconv.0", x, 1, residual=False)
        x2 = self.double_conv("down1.maxpool_conv.0", x1, 2)
        x3 = self.double_conv("down2.maxpool_conv.0", x2, 2)
        x4 = self.double_conv("down3.maxpool_conv.0", x3, 2)
        x5 = self.double_conv("down4.maxpool_conv.0", x4, 2)
        x6 = self.double_conv("down5.maxpool_conv.0", x5, 2)
        fused = torch.cat([x6, self.audio_branch(mode, audio)], dim=1)
        fused = self.double_conv("fuse_conv.1", self.double_conv("fuse_conv.0", fused, 1), 1)
        y = self.up("up1", fused, x5)
        y = self.up("up2", y, x4)
        y = self.up("up3", y, x3)
        y = self.up("up4", y, x2)
        y = self.up("up5", y, x1)
        return torch.sigmoid(F.conv2d(y, self.sd["outc.conv.weight"], self.sd["outc.conv.bias"]))

    # -- the 'ave' audio encoder
    _ENCODER = ((1, 1, False), (1, 1, True), (1, 1, True), ((3, 1), 1, False), (1, 1, True), (1, 1, True),
                (3, 1, False), (1, 1, True), (1, 1, True), ((3, 2), 1, False), (1, 1, True), (1, 0, False),
                (1, 0, False))  # (stride, padding, residual) of blocks 1..13

    def encoder(self, mel: torch.Tensor) -> torch.Tensor:
        x = mel
        for i, (stride, padding, residual) in enumerate(self._ENCODER):
            y = F.conv2d(x, self.sd[f"{i}.conv_block.0.weight"], self.sd[f"{i}.conv_block.0.bias"], stride=stride,
                         padding=padding)
            y = self.bn(f"{i}.conv_block.1", y)
            x = F.relu(y + x if residual else y)
        return x.reshape(x.shape[0], 512)


def _random_state(shapes: dict[str, torch.Size], seed: int) -> dict[str, torch.Tensor]:
    """Random weights for every tensor name: He-uniform convolutions, BatchNorm affine away from (1, 0)."""
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for name, shape in shapes.items():
        if name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(1000 + seed, dtype=torch.long)
        elif len(shape) == 4:
            bound = (6.0 / (shape[1] * shape[2] * shape[3])) ** 0.5
            state[name] = (torch.rand(shape, generator=gen) * 2 - 1) * bound
        elif name.endswith("running_mean") or name.endswith("running_var"):
            state[name] = torch.zeros(shape)  # replaced from the data by _FunctionalNet(fill_stats=True)
        elif name.endswith("weight"):
            state[name] = 0.6 + 0.8 * torch.rand(shape, generator=gen)
        else:
            state[name] = 0.1 * torch.randn(shape, generator=gen)
    return state


def _audio_like(shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    return torch.randn(shape, generator=gen).abs() * 0.5


@pytest.fixture(scope="module")
def functional_generators(tmp_path_factory) -> dict[str, tuple[Path, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per mode: a checkpoint with random weights and statistics, two inputs, and the restatement's output."""
    out_dir = tmp_path_factory.mktemp("functional")
    built = {}
    for k, mode in enumerate(MODES):
        shapes = {n: t.shape for n, t in Model(6, mode).state_dict().items()}
        state = _random_state(shapes, seed=10 + k)
        gen = torch.Generator().manual_seed(20 + k)
        image = image_like_batch(1, gen)
        audio = _audio_like((1, *AUDIO_SHAPES[mode]), gen)
        with torch.no_grad():
            expected = _FunctionalNet(state, gen, fill_stats=True).generator(mode, image, audio)
        path = out_dir / f"functional_{mode}.pth"
        torch.save(state, path)  # exactly SyncTalk_2D's torch.save(model.state_dict()) layout
        built[mode] = (path, image, audio, expected)
    return built


def _spread(y: torch.Tensor) -> float:
    """Share of output values away from the sigmoid's flat ends."""
    return float(((y > 0.05) & (y < 0.95)).float().mean())


@pytest.mark.parametrize("mode", MODES)
def test_generator_matches_functional_restatement(functional_generators, mode):
    path, image, audio, expected = functional_generators[mode]
    assert _spread(expected) > 0.5, "restatement output saturated; the comparison would prove little"
    model = load_generator(path, mode=mode)
    saved = torch.load(path, weights_only=True)
    bn_var = saved["up3.conv.double_conv.0.conv.4.running_var"]
    assert not torch.allclose(bn_var, torch.ones_like(bn_var)), "BatchNorm statistics must be non-trivial"
    with torch.no_grad():
        got = model(image, audio)
    assert got.shape == (1, 3, 320, 320)
    assert float((got - expected).abs().max()) < 1e-5


def test_audio_encoder_matches_functional_restatement(tmp_path):
    shapes = {n: t.shape for n, t in encoder_state_for_saving(AudioEncoder()).items()}
    state = _random_state(shapes, seed=7)
    gen = torch.Generator().manual_seed(8)
    mel = (torch.randn(6, 1, 80, 16, generator=gen) * 1.5 - 1.0).clamp(-4, 4)
    with torch.no_grad():
        expected = _FunctionalNet(state, gen, fill_stats=True).encoder(mel)
    path = tmp_path / "audio_visual_encoder.pth"
    torch.save(state, path)
    encoder = load_audio_encoder(path)
    with torch.no_grad():
        got = encoder(mel)
    assert got.shape == (6, 512)
    assert float((expected > 0).float().mean()) > 0.2, "embedding mostly zero; the comparison would prove little"
    assert float((got - expected).abs().max()) < 1e-5 * max(1.0, float(expected.abs().max()))


def test_ave_and_hubert_differ_only_in_conv3_stride(functional_generators):
    """The same tensors load as 'ave' and as 'hubert': no shape tells them apart, only conv3's stride differs.

    So a checkpoint trained as 'hubert' and loaded under the wrong name ('ave', the default) loads cleanly; framegen
    can only say that it assumed the mode (``mode_choice.assumed``) and let the user name it.
    """
    path = functional_generators["ave"][0]
    ave = load_generator(path, mode="ave")
    hubert = load_generator(path, mode="hubert")
    assert not ave.mode_choice.assumed and not hubert.mode_choice.assumed
    sd_a, sd_h = ave.state_dict(), hubert.state_dict()
    assert list(sd_a) == list(sd_h) and all(torch.equal(sd_a[k], sd_h[k]) for k in sd_a)
    assert ave.audio_model.conv3.stride == (1, 1)
    assert hubert.audio_model.conv3.stride == (2, 2)

    window = _audio_like((1, *AUDIO_SHAPES["hubert"]), torch.Generator().manual_seed(3))
    with torch.no_grad():
        stem_a = ave.audio_model.conv3(ave.audio_model.conv2(ave.audio_model.conv1(window)))
        stem_h = hubert.audio_model.conv3(hubert.audio_model.conv2(hubert.audio_model.conv1(window)))
        # stride 2 = stride 1 sampled at every other position: the weights are the same, the outputs are not.
        assert stem_a.shape == (1, 256, 32, 32) and stem_h.shape == (1, 256, 16, 16)
        assert torch.allclose(stem_h, stem_a[:, :, ::2, ::2], atol=1e-5)
        assert hubert.audio_model(window).shape == (1, 512, 10, 10)
        assert ave.audio_model(window).shape == (1, 512, 18, 18)  # cannot be fused with the 10x10 image path


# ---------------------------------------------------------------------------------------------------------------
# 3. Loading: every key spelling, mode detection, inspect.


@pytest.fixture(scope="module")
def generator_state(generator_ckpt) -> dict[str, torch.Tensor]:
    """The calibrated seeded 'ave' checkpoint's tensors as stored."""
    return torch.load(generator_ckpt, weights_only=True)


@pytest.fixture(scope="module")
def encoder_state(encoder_ckpt) -> dict[str, torch.Tensor]:
    """The seeded encoder checkpoint's tensors as stored (no prefix)."""
    return torch.load(encoder_ckpt, weights_only=True)


def _same_tensors(module: torch.nn.Module, state: dict[str, torch.Tensor], prefix: str = "") -> bool:
    mine = module.state_dict()
    return len(mine) == len(state) and all(torch.equal(mine[prefix + k], v) for k, v in state.items())


@pytest.mark.parametrize("spelling", ["raw", "state_dict", "module", "state_dict+module"])
def test_generator_key_spellings(tmp_path, generator_ckpt, generator_state, spelling):
    if spelling == "raw":
        path = generator_ckpt
    else:
        state = generator_state
        if "module" in spelling:
            state = {f"module.{k}": v for k, v in state.items()}
        if "state_dict" in spelling:
            state = {"state_dict": state, "epoch": 12}
        path = tmp_path / "wrapped.pth"
        torch.save(state, path)
    model = load_generator(path)
    assert model.mode == "ave" and not model.training
    assert _same_tensors(model, generator_state)


def test_ave_assumed_with_a_note(generator_ckpt):
    model = load_generator(generator_ckpt)
    choice = model.mode_choice
    assert (model.mode, choice.assumed, choice.possible) == ("ave", True, ("ave", "hubert"))
    assert "assumed" in choice.note and "hubert" in choice.note
    named = load_generator(generator_ckpt, mode="ave")
    assert not named.mode_choice.assumed and named.mode_choice.note is None


def test_hubert_when_named(functional_generators):
    model = load_generator(functional_generators["hubert"][0], mode="hubert")
    assert model.mode == "hubert" and not model.mode_choice.assumed
    assert model.audio_model.conv3.stride == (2, 2)


def test_wenet_detected(functional_generators):
    path = functional_generators["wenet"][0]
    model = load_generator(path)
    assert model.mode == "wenet" and not model.mode_choice.assumed and model.mode_choice.note is None
    assert model.mode_choice.possible == ("wenet",)
    info = inspect_checkpoint(path)
    assert (info["mode"], info["possible_modes"], info["mode_assumed"]) == ("wenet", ["wenet"], False)
    assert "note" not in info


@pytest.mark.parametrize("prefix", ["", "audio_encoder.", "module.audio_encoder.", "module."])
def test_audio_encoder_key_spellings(tmp_path, encoder_ckpt, encoder_state, prefix):
    if prefix:
        path = tmp_path / "enc.pth"
        torch.save({prefix + k: v for k, v in encoder_state.items()}, path)
    else:
        path = encoder_ckpt
    encoder = load_audio_encoder(path)
    assert not encoder.training
    assert _same_tensors(encoder, encoder_state, prefix="audio_encoder.")


def test_inspect_generator(generator_ckpt):
    info = inspect_checkpoint(generator_ckpt)
    assert info["kind"] == "generator"
    assert (info["mode"], info["possible_modes"], info["mode_assumed"]) == ("ave", ["ave", "hubert"], True)
    assert "assumed" in info["note"]
    assert info["parameters"] == GENERATOR_PARAMETERS
    assert info["tensors"] == 556
    assert info["dtype"] == "float32"
    assert info["file_size"] == generator_ckpt.stat().st_size
    assert info["sha256"] == hashlib.sha256(generator_ckpt.read_bytes()).hexdigest()
    json.dumps(info)  # the CLI prints it as JSON


def test_inspect_audio_encoder(encoder_ckpt):
    info = inspect_checkpoint(encoder_ckpt)
    assert (info["kind"], info["mode"], info["possible_modes"]) == ("audio_encoder", "ave", ["ave"])
    assert (info["parameters"], info["tensors"], info["dtype"]) == (ENCODER_PARAMETERS, 91, "float32")
    assert info["sha256"] == hashlib.sha256(encoder_ckpt.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# 4. Bad checkpoints: one line, naming the file and the problem.


class NotAStateDict:
    """Pickled by reference to this module, so loading it would need arbitrary unpickling."""

    def __init__(self) -> None:
        self.weights = torch.zeros(3)


def _one_line_error(exc_info: pytest.ExceptionInfo, path: Path, *fragments: str) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg, msg
    assert str(path) in msg, msg
    for fragment in fragments:
        assert fragment in msg, f"{fragment!r} not in {msg!r}"
    return msg


def _bad_file(tmp_path: Path, case: str, generator_ckpt: Path, generator_state: dict) -> tuple[Path, tuple]:
    """Write the bad checkpoint for ``case``; return its path and the message fragments expected."""
    path = tmp_path / f"{case}.pth"
    if case == "missing":
        return path, ("no such checkpoint file",)
    if case == "directory":
        path.mkdir()
        return path, ("is a directory",)
    if case == "empty":
        path.write_bytes(b"")
        return path, ("empty file",)
    if case == "text":
        path.write_text("epoch 12\nloss 0.031\n")
        return path, ("text file", "not a PyTorch checkpoint")
    if case == "truncated":
        data = generator_ckpt.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        return path, ("truncated",)
    if case == "random-bytes":
        path.write_bytes(bytes(range(256)) * 8)
        return path, ("not a PyTorch checkpoint",)
    if case == "arbitrary-pickle":
        torch.save({"model": NotAStateDict()}, path)
        return path, ("refused", "arbitrary unpickling", "weights_only", "NotAStateDict")
    if case == "whole-module":
        torch.save(torch.nn.Linear(2, 2), path)
        return path, ("refused", "arbitrary unpickling", "torch.nn.modules.linear.Linear")
    if case == "not-a-dict":
        torch.save([torch.zeros(2)], path)
        return path, ("holds a list, not a state dict",)
    if case == "non-tensor-entry":
        torch.save({"inc.inconv.0.conv.0.weight": 3}, path)
        return path, ("'inc.inconv.0.conv.0.weight' is not a tensor",)
    state = dict(generator_state)
    if case == "wrong-keys":
        state["outc.weight"] = state.pop("outc.conv.weight")
        del state["up5.conv.double_conv.1.conv.7.running_var"]
        torch.save(state, path)
        return path, ("2 missing key(s), first 'up5.conv.double_conv.1.conv.7.running_var'",
                      "1 unexpected key(s), first 'outc.weight'")
    if case == "wrong-shape":
        state["outc.conv.weight"] = torch.zeros(4, 16, 1, 1)
        torch.save(state, path)
        return path, ("shape mismatch for 'outc.conv.weight'", "[4, 16, 1, 1]", "[3, 16, 1, 1]")
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["missing", "directory", "empty", "text", "truncated", "random-bytes",
                                  "arbitrary-pickle", "whole-module", "not-a-dict", "non-tensor-entry",
                                  "wrong-keys", "wrong-shape"])
def test_bad_generator_checkpoint(tmp_path, generator_ckpt, generator_state, case):
    path, fragments = _bad_file(tmp_path, case, generator_ckpt, generator_state)
    with pytest.raises(CheckpointError) as exc_info:
        load_generator(path)
    _one_line_error(exc_info, path, *fragments)
    with pytest.raises(CheckpointError) as again:
        inspect_checkpoint(path)
    assert str(again.value) == str(exc_info.value)


def test_bad_audio_encoder_checkpoint(tmp_path, encoder_state):
    wrong = dict(encoder_state)
    wrong["12.conv_block.0.weight"] = torch.zeros(512, 512, 3, 3)
    path = tmp_path / "enc_shape.pth"
    torch.save(wrong, path)
    with pytest.raises(CheckpointError) as exc_info:
        load_audio_encoder(path)
    # Keys are named as the file spells them (no 'audio_encoder.' prefix was added by the loader).
    _one_line_error(exc_info, path, "shape mismatch for '12.conv_block.0.weight'", "[512, 512, 3, 3]",
                    "[512, 512, 1, 1]")
    missing = {k: v for k, v in encoder_state.items() if not k.startswith("12.")}
    torch.save(missing, path)
    with pytest.raises(CheckpointError) as exc_info:
        load_audio_encoder(path)
    _one_line_error(exc_info, path, "7 missing key(s), first '12.conv_block.0.weight'")


def test_generator_passed_as_encoder_and_vice_versa(generator_ckpt, encoder_ckpt):
    with pytest.raises(CheckpointError) as exc_info:
        load_audio_encoder(generator_ckpt)
    _one_line_error(exc_info, generator_ckpt, "generator checkpoint, not an audio encoder")
    with pytest.raises(CheckpointError) as exc_info:
        load_generator(encoder_ckpt)
    _one_line_error(exc_info, encoder_ckpt, "audio encoder checkpoint, not a generator")


def test_mode_that_does_not_fit(generator_ckpt, functional_generators):
    with pytest.raises(CheckpointError) as exc_info:
        load_generator(generator_ckpt, mode="wenet")
    _one_line_error(exc_info, generator_ckpt, "mode 'wenet' does not fit", "ave, hubert")
    wenet = functional_generators["wenet"][0]
    with pytest.raises(CheckpointError) as exc_info:
        load_generator(wenet, mode="hubert")
    _one_line_error(exc_info, wenet, "mode 'hubert' does not fit", "wenet")


def test_unknown_mode(generator_ckpt):
    with pytest.raises(CheckpointError) as exc_info:
        load_generator(generator_ckpt, mode="deepspeech")
    _one_line_error(exc_info, generator_ckpt, "unknown mode 'deepspeech'", "ave, hubert, wenet")


def test_neither_generator_nor_encoder(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(2, 2), "fc.bias": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError) as exc_info:
        inspect_checkpoint(path)
    _one_line_error(exc_info, path, "neither a SyncTalk_2D generator nor an audio encoder", "'fc.weight'")
    with pytest.raises(CheckpointError) as exc_info:
        load_generator(path)
    _one_line_error(exc_info, path, "556 missing key(s)", "2 unexpected key(s), first 'fc.weight'")
