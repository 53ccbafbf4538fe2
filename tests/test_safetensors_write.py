"""The aligned safetensors writer: any reader loads its files, and the loader uses its tensors in place."""

from __future__ import annotations

import struct

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import video3d_zoo
from video3d_zoo.weights.checkpoint_files import read_checkpoint
from video3d_zoo.weights.safetensors_write import ALIGNMENT, save_aligned


def test_every_dtype_and_shape_round_trips_through_safetensors_own_reader(tmp_path):
    tensors = {"f32": torch.randn(3, 5), "f64": torch.randn(7, dtype=torch.float64),
               "bf16": torch.randn(4, 4).bfloat16(), "f16": torch.randn(9).half(),
               "i64": torch.tensor(12345678901), "i32": torch.arange(5, dtype=torch.int32),
               "u8": torch.arange(3, dtype=torch.uint8), "i8": torch.tensor([-3, 4], dtype=torch.int8),
               "bool": torch.tensor([True, False, True]), "empty": torch.zeros(0, 4),
               "strided": torch.randn(6, 4).t(), "view": torch.randn(10)[2:7]}
    path = tmp_path / "t.safetensors"
    save_aligned(tensors, path, metadata={"note": "x"})
    loaded = load_file(str(path))
    assert loaded.keys() == tensors.keys()
    for key, t in tensors.items():
        assert loaded[key].dtype == t.dtype and torch.equal(loaded[key], t), key
    with safe_open(str(path), framework="pt") as fh:
        assert fh.metadata() == {"note": "x"}
    header_len = struct.unpack("<Q", path.read_bytes()[:8])[0]
    assert (8 + header_len) % ALIGNMENT == 0


@pytest.mark.parametrize("num_classes", [400, 700, 101, 51])
def test_saved_models_load_in_place_without_copies(tmp_path, num_classes):
    model = video3d_zoo.create_model("resnet3d_18", num_classes=num_classes, widen_factor=0.25)
    folder = video3d_zoo.save_pretrained(model, tmp_path / "m")
    sd, _ = read_checkpoint(folder)
    big = {k: t for k, t in sd.items() if t.numel() * t.element_size() % ALIGNMENT == 0}
    assert len(big) >= len(sd) - 25  # only odd-sized biases and the int64 BatchNorm counters are left over
    assert all(t.untyped_storage().data_ptr() % ALIGNMENT == 0 for t in big.values())
    reloaded = video3d_zoo.load_model(folder)
    ref = model.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in reloaded.state_dict().items())


def test_refuses_what_it_cannot_store(tmp_path):
    with pytest.raises(TypeError, match="complex"):
        save_aligned({"c": torch.zeros(2, dtype=torch.complex64)}, tmp_path / "c.safetensors")
    with pytest.raises(TypeError, match="strings"):
        save_aligned({"a": torch.zeros(2)}, tmp_path / "m.safetensors", metadata={"n": 1})
