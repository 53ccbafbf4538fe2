"""ONNX export of every model family, checked with onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import video3d_zoo
from video3d_zoo.cli.commands import main as cli_main
from video3d_zoo.errors import ExportError
from video3d_zoo.inference.export import export_onnx

from helpers import tiny_kwargs

ort = pytest.importorskip("onnxruntime")


def one_model_per_family():
    seen = {}
    for name in video3d_zoo.list_models():
        seen.setdefault(video3d_zoo.get_model_spec(name).family, name)
    return sorted(seen.values()) + ["mc3_18", "r2plus1d_18"]


@pytest.mark.parametrize("name", one_model_per_family())
def test_family_exports_and_matches_pytorch(name, tmp_path):
    torch.manual_seed(0)
    model = video3d_zoo.create_model(name, num_classes=6, **tiny_kwargs(name)).eval()
    frames = max(8, model.min_input_size[0])
    size = max(32, model.min_input_size[1])
    report = export_onnx(model, tmp_path / "m.onnx", frames=frames, size=size)
    assert report.max_abs_diff is not None and report.max_abs_diff < 1e-3
    session = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    clip = torch.randn(3, 3, frames * 2, size, size)  # other batch and time than traced
    with torch.no_grad():
        np.testing.assert_allclose(session.run(None, {"clip": clip.numpy()})[0], model(clip).numpy(),
                                   rtol=1e-3, atol=1e-4)


def test_shortcut_a_exports(tmp_path):
    model = video3d_zoo.create_model("resnet3d_18", shortcut_type="A", widen_factor=0.125).eval()
    assert export_onnx(model, tmp_path / "a.onnx", frames=8, size=32).max_abs_diff < 1e-3


def test_unexportable_model_says_why(tmp_path):
    class Weird(torch.nn.Module):
        in_chans = 3
        min_input_size = (1, 1, 1)

        def forward(self, x):
            return torch.fft.fft(x).real.mean(dim=(2, 3, 4))

    with pytest.raises(ExportError, match="cannot be exported to ONNX"):
        export_onnx(Weird(), tmp_path / "w.onnx", frames=4, size=8)
    assert not (tmp_path / "w.onnx").exists()


def test_cli_export(tmp_path, capsys):
    model = video3d_zoo.create_model("resnet3d_10", widen_factor=0.125)
    video3d_zoo.save_pretrained(model, tmp_path / "m")
    assert cli_main(["export", str(tmp_path / "m"), "--format", "onnx", "-o", str(tmp_path / "m.onnx"),
                     "--frames", "8", "--size", "32"]) == 0
    assert "dynamic axes" in capsys.readouterr().out
    assert (tmp_path / "m.onnx").stat().st_size > 10_000
