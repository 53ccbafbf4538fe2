"""Proof of identity: every golden case, saved in its original file layout, loads through
``from_pretrained`` and reproduces the reference logits and pooled features in float32."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch

from video3d_zoo import from_pretrained
from video3d_zoo.weights.convert import detect_layout
from video3d_zoo.inference.prepare import optimize_for_inference

from helpers import golden_case_files

CASES = golden_case_files()


def original_checkpoint(case, recipe):
    """The case's recipe weights in the layout of the released file (wrapper, prefix, counters)."""
    sd = OrderedDict((k, torch.from_numpy(v)) for k, v in recipe.case_state_dict(case).items())
    layout = case["checkpoint"]
    if not layout["wrapper_keys"]:
        return sd
    extras = {"epoch": 200, "arch": layout.get("arch"), "state_dict": sd, "optimizer": {"state": {}},
              "scheduler": {"milestones": [50, 100, 150]}}
    return {key: extras.get(key, {}) for key in layout["wrapper_keys"]}


def test_cases_are_discovered():
    assert len(CASES) >= 20


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_golden_case(path, recipe, tmp_path):
    case = recipe.load_case(path)
    released = case["checkpoint"].get("released_file") or f"{case['name']}.pth"
    file = tmp_path / released
    torch.save(original_checkpoint(case, recipe), file)

    model = from_pretrained(file)
    expected_layout = {"2017": "kenshohara2017", "2020": "kenshohara2020"}.get(case["era"], case["era"])
    assert detect_layout(torch.load(file, weights_only=True)) == expected_layout
    assert model.config.num_classes == case["num_classes"]
    assert model.num_features == case["feature_dim"]
    assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(case["params_millions"], abs=1e-3)

    x = torch.from_numpy(recipe.case_input(case))
    with torch.no_grad():
        features = model.forward_head(model.forward_features(x), pre_logits=True)
        logits = model(x)
    ref_logits, ref_features = recipe.case_reference(case)
    tol = case["suggested_tolerance"]
    np.testing.assert_allclose(logits.numpy(), ref_logits, rtol=tol["rtol"], atol=tol["atol"])
    np.testing.assert_allclose(features.numpy(), ref_features, rtol=tol["features_rtol"],
                               atol=tol["features_atol"])

    # The float32 fast path (BN folded, channels_last_3d) stays within the same tolerance.
    fast = optimize_for_inference(model, precision="fp32")
    np.testing.assert_allclose(fast(x).numpy(), ref_logits, rtol=tol["rtol"], atol=tol["atol"])


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_golden_input_spec_follows_the_era(path, recipe):
    case = recipe.load_case(path)
    model_spec = from_pretrained(original_checkpoint(case, recipe)).config.input_spec
    expected = {"2017": ("kenshohara2017", 255.0), "2020": ("kenshohara2020", 1.0),
                "torchvision": ("torchvision", 1.0)}[case["era"]]
    assert (model_spec.name, model_spec.value_scale) == expected
