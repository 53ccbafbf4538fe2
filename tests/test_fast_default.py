"""The fastest exact path is the default: BN folding and channels_last unless --no-fast, --precision auto,
and batches staged for a GPU from a reused page-locked buffer (the same structure runs here on the CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import video3d_zoo
from video3d_zoo.cli.commands import main as cli_main
from video3d_zoo.inference.precision import bf16_supported, resolve_precision
from video3d_zoo.jobs.pipeline import BatchStaging
from videos import write_video


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    model = video3d_zoo.create_model("resnet3d_10", widen_factor=0.125, num_classes=4)
    spec = model.config.input_spec.replace(frames=4, crop_size=32, resize=32)
    model.config = model.config.replace(input_spec=spec)
    return video3d_zoo.save_pretrained(model, tmp_path_factory.mktemp("w") / "tiny")


def _extract(tmp_path, weights, *flags):
    videos = tmp_path / "videos"
    if not videos.exists():
        videos.mkdir()
        write_video(videos / "a.mp4", 12)
    out = tmp_path / "_".join(["out", *(f.strip("-") for f in flags)])
    assert cli_main(["extract", str(videos), "--weights", str(weights), "-o", str(out), "--quiet", *flags]) == 0
    with np.load(out / "a.mp4.npz") as data:
        return data["features"].copy()


def test_auto_precision_is_bf16_only_where_it_is_native():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == ("bf16" if bf16_supported(cpu) else "fp32")
    assert resolve_precision("fp32", cpu) == "fp32"


def test_extract_folds_batchnorm_by_default_and_no_fast_runs_the_model_as_loaded(tmp_path, weights, monkeypatch):
    from video3d_zoo.inference import prepare

    calls = []
    real = prepare.optimize_for_inference
    monkeypatch.setattr(prepare, "optimize_for_inference", lambda *a, **k: calls.append(k) or real(*a, **k))
    fast = _extract(tmp_path, weights)
    assert calls and calls[-1]["precision"] == "fp32"  # the default is the exact fast path
    calls.clear()
    plain = _extract(tmp_path, weights, "--no-fast")
    assert not calls
    np.testing.assert_allclose(fast, plain, rtol=1e-4, atol=1e-5)  # folding changes rounding only


def test_auto_precision_is_recorded_as_what_ran(tmp_path, weights):
    from video3d_zoo.jobs.feature_files import load_features

    _extract(tmp_path, weights, "--precision", "auto")
    loaded = load_features(tmp_path / "out_precision_auto")
    options = loaded.videos[0].provenance["inference_options"]
    assert options["precision"] == ("bf16" if bf16_supported(torch.device("cpu")) else "fp32")


def test_gpu_batches_are_staged_in_one_reused_buffer():
    made = []

    def allocate(shape, dtype):  # stands in for a pinned allocation (pinning needs CUDA)
        made.append(shape)
        return torch.empty(shape, dtype=dtype)

    stage = BatchStaging(torch.device("cpu"), pinned=True, allocate=allocate)
    clips = [torch.full((3, 4, 8, 8), float(i)) for i in range(5)]
    first = stage(clips[:4])
    assert torch.equal(first, torch.stack(clips[:4]))
    second = stage(clips[1:3])  # a smaller last batch reuses the buffer
    assert torch.equal(second, torch.stack(clips[1:3]))
    assert made == [(4, 3, 4, 8, 8)]
    stage([torch.zeros(3, 2, 8, 8)])  # clips of another shape get a buffer of their own
    assert len(made) == 2
    plain = BatchStaging(torch.device("cpu"))
    assert not plain.pinned and torch.equal(plain(clips[:2]), torch.stack(clips[:2]))
