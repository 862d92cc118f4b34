"""framegen.testing's assertions and the pytest plugin, as a user's suite meets them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from framegen.testing import assert_frames_close, assert_parity_passed


def test_assert_frames_close_names_stage_metric_limit_and_worst_pixel():
    rng = np.random.default_rng(3)
    ref = rng.integers(0, 256, (2, 40, 60, 3), dtype=np.uint8)
    assert_frames_close(ref.copy(), ref)  # identical frames pass
    off = ref.astype(np.int16)
    off[1, 17, 23, 2] += 3 if off[1, 17, 23, 2] < 250 else -3
    with pytest.raises(AssertionError) as info:
        assert_frames_close(off.astype(np.uint8), ref)
    text = str(info.value)
    assert text.startswith("final_frame (fp32 profile): max_abs 3 > 2")
    assert "worst: frame 1 at [17, 23, 2]" in text
    assert_frames_close(off.astype(np.uint8), ref, profile="fp16")  # 3 levels on one value is fp16 noise

    out = rng.random((3, 8, 8), dtype=np.float32)
    assert_frames_close(out + np.float32(2e-6), out)
    with pytest.raises(AssertionError, match=r"model_output \(fp32 profile\): .*mean_abs .* > 1\.00e-04"):
        assert_frames_close(out * np.float32(1.01), out)
    with pytest.raises(AssertionError, match=r"shapes differ: actual \(3, 8, 7\), expected \(3, 8, 8\)"):
        assert_frames_close(out[:, :, :7], out)


def test_assert_parity_passed_lists_each_failing_stage(clean_parity):
    assert_parity_passed(clean_parity)  # the suite's clean export passes
    label = clean_parity.candidates[0].label
    assert_parity_passed(clean_parity, label)
    with pytest.raises(AssertionError, match="has no candidate 'nope:fp8'"):
        assert_parity_passed(clean_parity, "nope:fp8")


USER_TEST = '''
from framegen.testing import assert_parity_passed


def test_parity(framegen_candidate):
    assert_parity_passed(framegen_candidate.report, framegen_candidate.label)


def test_unrelated():
    assert True
'''


@pytest.mark.slow
def test_a_user_project_runs_parity_as_one_test_per_candidate(tmp_path, generator_ckpt, bundle_dir):
    """A fresh project with its own checkpoint and bundle (copies of the suite's), configured in its pyproject.toml:
    pytest (with the plugin loaded from framegen's entry point) shows one test per candidate; a limit that fp16
    rounding breaks fails the fp16 candidate alone, with the stage, metric, limit and worst pixel in the message."""
    project = tmp_path / "user"
    project.mkdir()
    shutil.copy(generator_ckpt, project / "gen.pth")
    shutil.copytree(bundle_dir, project / "bundle")
    (project / "test_user.py").write_text(USER_TEST)
    (project / "test_stages.py").write_text(
        "def test_no_layers_stage(framegen_parity):\n"
        "    assert framegen_parity.candidates and all(s.stage != 'layers' for c in framegen_parity.candidates\n"
        "                                              for s in c.stages)\n")

    def run(extra: str) -> subprocess.CompletedProcess[str]:
        (project / "pyproject.toml").write_text(textwrap.dedent(f'''
            [tool.pytest.ini_options]
            framegen_bundle = "bundle"
            framegen_checkpoint = "gen.pth"
            framegen_backends = "ort-cpu:fp32,ort-cpu:fp16"
            framegen_frames = "1"
            framegen_tolerances = "fixed"
            framegen_locate = "false"
            {extra}
        '''))
        env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
        return subprocess.run([sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "-W", "ignore"],
                              cwd=project, env=env, capture_output=True, text=True, timeout=900)

    # fp32 noise (~3e-5) stays under a max of 1e-3, fp16 rounding (~3e-2) does not: one passes, one fails.
    mixed = run('framegen_tolerance = "model_output.max_abs=1e-3"')
    assert mixed.returncode == 1, mixed.stdout[-3000:] + mixed.stderr[-2000:]
    assert "test_parity[ort-cpu:fp32] PASSED" in mixed.stdout and "test_parity[ort-cpu:fp16] FAILED" in mixed.stdout
    assert "test_unrelated PASSED" in mixed.stdout
    assert "ort-cpu:fp16 model_output: max_abs" in mixed.stdout and "> 1.00e-03" in mixed.stdout
    assert "(worst: frame" in mixed.stdout
    assert "test_stages.py::test_no_layers_stage PASSED" in mixed.stdout  # framegen_locate = "false"
    selected = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "not framegen_parity", "-p",
                               "no:cacheprovider"], cwd=project, capture_output=True, text=True, timeout=300)
    assert "1 passed, 3 deselected" in selected.stdout, selected.stdout


def test_an_unconfigured_project_skips_with_the_reason(tmp_path):
    (tmp_path / "test_user.py").write_text(USER_TEST)
    result = subprocess.run([sys.executable, "-m", "pytest", "-rs", "-q", "-p", "no:cacheprovider"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout
    assert "1 passed, 1 skipped" in result.stdout
    assert "set framegen_bundle and framegen_checkpoint" in result.stdout


def test_a_malformed_setting_stops_pytest_before_any_test_with_one_line(tmp_path):
    (tmp_path / "test_user.py").write_text(USER_TEST)
    (tmp_path / "pyproject.toml").write_text('[tool.pytest.ini_options]\nframegen_locate = "Maybe"\n')
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 4, result.stdout + result.stderr  # pytest's usage error
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert lines == ["ERROR: framegen_locate must be true or false, not 'Maybe'"]  # as written
