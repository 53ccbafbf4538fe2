"""The first compiled run: eager batches while another process builds the library, then the library."""

from __future__ import annotations

import json
import sys
import warnings

import pytest
import torch

import video3d_zoo
from video3d_zoo.inference import background, compiled
from video3d_zoo.inference.prepare import optimize_for_inference

pytestmark = pytest.mark.skipif(not compiled.available(), reason="this torch has no AOTInductor CPU runner")

CLIP = (3, 4, 32, 32)


def tiny(seed=0):
    torch.manual_seed(seed)
    return video3d_zoo.create_model("resnet3d_10", widen_factor=0.125, num_classes=5).eval()


def _switch(fast):
    (entry,) = [fn for fn in fast._compiled.values() if isinstance(fn, background.SwitchWhenBuilt)]
    return entry


def test_the_first_batches_run_eager_then_the_library_built_elsewhere(tmp_path, monkeypatch):
    monkeypatch.setenv("VIDEO3D_ZOO_HOME", str(tmp_path / "home"))
    model = tiny(seed=11)
    fast = optimize_for_inference(model, compile=True, batch_size=2)
    assert fast.warm_up("forward_features", CLIP, background=True)
    x = torch.randn(2, *CLIP)
    with torch.no_grad():
        expected = model.forward_features(x)
    # Returned at once, from the eager path, while the child still builds.
    torch.testing.assert_close(fast.forward_features(x), expected, rtol=1e-4, atol=1e-5)
    assert fast.batches_run() == {"eager": 1, "compiled": 0}
    assert fast.builds_running() == [_switch(fast).build.process.pid]
    assert _switch(fast).build.wait(timeout=300)
    assert fast.builds_running() == []
    home = compiled.compiled_home()
    assert len(list(home.glob("*.json"))) == 1 and len(list(home.glob("*.so"))) == 1
    # Nothing half-written, no request left behind.
    assert not [p for p in home.iterdir() if p.suffix not in (".json", ".so", ".lock", ".log")]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        torch.testing.assert_close(fast.forward_features(x), expected, rtol=1e-3, atol=1e-4)
    assert fast.batches_run() == {"eager": 1, "compiled": 1}

    # The next run loads it at its warm-up: every batch compiled, no build process started.
    monkeypatch.setattr(background, "start", lambda *a, **k: pytest.fail("built a second time"))
    again = optimize_for_inference(model, compile=True, batch_size=2)
    assert again.warm_up("forward_features", CLIP, background=True)
    torch.testing.assert_close(again.forward_features(x[:1]), expected[:1], rtol=1e-3, atol=1e-4)
    assert again.batches_run() == {"eager": 0, "compiled": 1}


def test_a_failing_build_leaves_the_run_on_eager_with_one_warning(tmp_path, monkeypatch):
    monkeypatch.setenv("VIDEO3D_ZOO_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(background, "_child_command",
                        lambda request: [sys.executable, "-c", "import sys; sys.exit('no C++ compiler')"])
    model = tiny(seed=12)
    fast = optimize_for_inference(model, compile=True, batch_size=2)
    fast.warm_up("forward", CLIP, background=True)
    _switch(fast).build.wait(timeout=60)
    x = torch.randn(2, *CLIP)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outputs = [fast(x) for _ in range(3)]
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "eager fast path: no C++ compiler" in messages[0]
    with torch.no_grad():
        for out in outputs:
            torch.testing.assert_close(out, model(x), rtol=1e-4, atol=1e-5)
    assert fast.batches_run() == {"eager": 3, "compiled": 0}
    assert not list(compiled.compiled_home().glob("*.so")) and not list(compiled.compiled_home().glob("*.json"))


def test_where_no_process_can_start_the_job_builds_in_its_own(tmp_path, monkeypatch):
    monkeypatch.setenv("VIDEO3D_ZOO_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(background, "_spawn", lambda request, err: None)
    built = []
    monkeypatch.setattr(compiled, "compile_entry", lambda *a, **k: built.append(a) or (lambda x: x))
    fast = optimize_for_inference(tiny(seed=13), compile=True, batch_size=2)
    assert fast.warm_up("forward", CLIP, background=True)
    assert len(built) == 1  # the single-process path, as before
    assert not list(compiled.compiled_home().glob("*.request.*"))  # the unused request is removed


def _wait_for_build(timeout=300.0):
    import time

    deadline = time.monotonic() + timeout
    while list(compiled.compiled_home().glob("*.request.*.pt")) and time.monotonic() < deadline:
        time.sleep(0.2)


def test_extract_records_which_path_each_video_ran_and_the_next_run_is_compiled(tmp_path, monkeypatch):
    import numpy as np

    from video3d_zoo.jobs.extract import run_extraction
    from videos import write_video

    monkeypatch.setenv("VIDEO3D_ZOO_HOME", str(tmp_path / "home"))
    model = tiny(seed=14)
    model.config = model.config.replace(input_spec=model.config.input_spec.replace(frames=4, crop_size=32,
                                                                                   resize=32))
    (tmp_path / "videos").mkdir()
    write_video(tmp_path / "videos" / "a.mp4", 12, 32, 32)
    fast = optimize_for_inference(model, compile=True, batch_size=2)
    first = run_extraction(fast, [tmp_path / "videos"], tmp_path / "out1", progress=False)
    assert first.timing["eager_batches"] >= 1 and first.timing["compiled_batches"] == 0
    assert "batches run eager" in first.describe_timing()
    if first.timing["builds_running"]:  # the usual case: a tiny run ends before its build
        assert "still being built in another process" in first.describe()
    with np.load(tmp_path / "out1" / "a.mp4.npz") as npz:
        assert json.loads(str(npz["execution"])) == ["eager"]
        eager = npz["features"]
    _wait_for_build()  # the build went on after the run, as it does detached after a CLI run

    again = optimize_for_inference(model, compile=True, batch_size=2)
    second = run_extraction(again, [tmp_path / "videos"], tmp_path / "out2", progress=False)
    assert second.timing["eager_batches"] == 0 and second.timing["compiled_batches"] >= 1
    assert second.timing["builds_running"] == 0 and "still being built" not in second.describe()
    with np.load(tmp_path / "out2" / "a.mp4.npz") as npz:
        assert json.loads(str(npz["execution"])) == ["compiled"]
        np.testing.assert_allclose(npz["features"], eager, rtol=1e-3, atol=1e-4)
