"""Compiled inference cached across runs (AOTInductor libraries keyed by weights, entry, shape, machine)."""

from __future__ import annotations

import json

import pytest
import torch

import video3d_zoo
from video3d_zoo.inference import compiled
from video3d_zoo.inference.precision import bf16_supported
from video3d_zoo.inference.prepare import optimize_for_inference, prepare_network

pytestmark = pytest.mark.skipif(not compiled.available(), reason="this torch has no AOTInductor CPU runner")

CLIP = (3, 4, 32, 32)


def tiny(seed=0):
    torch.manual_seed(seed)
    return video3d_zoo.create_model("resnet3d_10", widen_factor=0.125, num_classes=5).eval()


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("compiled")


@pytest.fixture(scope="module")
def built(home):
    """One library of a tiny model's forward (fp32, batch 4): (prepared model, example, runner, seconds)."""
    prepared = prepare_network(tiny())
    example = torch.randn(4, *CLIP).contiguous(memory_format=torch.channels_last_3d)
    runner, seconds = compiled.load_or_build(prepared, "forward", example, home=home)
    return prepared, example, runner, seconds


def test_a_built_library_matches_eager_and_the_next_process_reuses_it(built, home):
    prepared, example, runner, seconds = built
    assert seconds > 0  # built here
    with torch.no_grad():
        torch.testing.assert_close(runner.run([example])[0], prepared(example), rtol=1e-4, atol=1e-5)
    again, seconds = compiled.load_or_build(prepared, "forward", example, home=home)
    assert seconds == 0.0  # loaded from the cache
    key = compiled.artefact_key(prepared, "forward", example)
    record = json.loads((home / f"{key}.json").read_text())
    assert record["entry"] == "forward" and record["input"] == [4, *CLIP]


def test_the_key_changes_with_the_weights_the_entry_and_the_shape(built):
    prepared, example, _, _ = built
    key = compiled.artefact_key(prepared, "forward", example)
    other = prepare_network(tiny(seed=1))
    assert compiled.artefact_key(other, "forward", example) != key
    assert compiled.artefact_key(prepared, "forward_features", example) != key
    assert compiled.artefact_key(prepared, "forward", example[:2]) != key


def test_the_key_changes_with_a_rewrite_that_keeps_the_weights(built):
    import copy

    from video3d_zoo.inference.space_to_depth import SpaceToDepthConv3d, rewrite_stems

    prepared, example, _, _ = built
    digest = "same weights"
    key = compiled.artefact_key(prepared, "forward", example, weights_digest=digest)
    rewritten = copy.deepcopy(prepared)
    assert rewrite_stems(rewritten) == 1
    blocked = compiled.artefact_key(rewritten, "forward", example, weights_digest=digest)
    assert blocked != key
    rewritten.conv1 = SpaceToDepthConv3d(prepared.conv1, fold_time=not rewritten.conv1.fold_time)
    assert compiled.artefact_key(rewritten, "forward", example, weights_digest=digest) not in (key, blocked)


def test_static_batches_pad_and_split_without_changing_results(built):
    prepared, example, runner, _ = built
    static = compiled.StaticBatchRunner(runner, example)
    x = torch.randn(11, *CLIP)
    with torch.no_grad():
        want = prepared(x.contiguous(memory_format=torch.channels_last_3d))
    for size in (1, 3, 4, 11):
        torch.testing.assert_close(static(x[:size]), want[:size], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=r"clips of shape \(3, 4, 32, 32\)"):
        static(torch.randn(2, 3, 8, 32, 32))


def test_a_tampered_library_is_rebuilt_not_loaded(built, home):
    prepared, example, _, _ = built
    key = compiled.artefact_key(prepared, "forward", example)
    so = home / json.loads((home / f"{key}.json").read_text())["file"]
    data = bytearray(so.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged = home / "damaged.tmp"
    damaged.write_bytes(bytes(data))
    damaged.replace(so)  # a new file under the old name; this process's mapping of the old one stays intact
    runner, seconds = compiled.load_or_build(prepared, "forward", example, home=home)
    assert seconds > 0
    with torch.no_grad():
        torch.testing.assert_close(runner.run([example])[0], prepared(example), rtol=1e-4, atol=1e-5)


def test_a_failing_compilation_falls_back_to_eager_with_a_warning(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(compiled, "_build", broken)
    model = tiny(seed=2)
    fast = optimize_for_inference(model, compile=True)
    x = torch.randn(2, *CLIP)
    with pytest.warns(RuntimeWarning, match="compilation unavailable.*no C\\+\\+ compiler"):
        out = fast(x)
    with torch.no_grad():
        torch.testing.assert_close(out, model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not bf16_supported(torch.device("cpu")), reason="no native bf16 on this CPU")
def test_compiled_bf16_features_stay_close_to_fp32():
    model = tiny(seed=3)
    fast = optimize_for_inference(model, precision="bf16", compile=True, batch_size=4)
    x = torch.randn(3, *CLIP)
    with torch.no_grad():
        want = model.forward_features(x)
    got = fast.forward_features(x)
    assert got.dtype == torch.float32 and got.shape == want.shape
    assert float((got - want).abs().max() / want.abs().max()) < 0.05


def test_a_later_process_loads_the_library_without_importing_the_compiler(built, home):
    # Importing torch._inductor costs about 1.3 s: a cached library must not need it.
    import os
    import subprocess
    import sys

    from helpers import ROOT

    code = ("import sys, torch, video3d_zoo\n"
            "from video3d_zoo.inference import compiled\n"
            "from video3d_zoo.inference.prepare import prepare_network\n"
            "torch.manual_seed(0)\n"
            "model = video3d_zoo.create_model('resnet3d_10', widen_factor=0.125, num_classes=5).eval()\n"
            "prepared = prepare_network(model)\n"
            "example = torch.load(sys.argv[2])\n"
            "runner, seconds = compiled.load_or_build(prepared, 'forward', example, home=sys.argv[1])\n"
            "out = runner.run([example])[0]\n"
            "print(seconds, 'torch._inductor' in sys.modules, float(out.double().sum()))\n")
    prepared, example, runner, _ = built
    saved = home / "example.pt"
    torch.save(example, saved)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code, str(home), str(saved)], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    seconds, imported, total = out.stdout.split()
    assert float(seconds) == 0.0 and imported == "False"
    assert float(total) == pytest.approx(float(runner.run([example])[0].double().sum()), rel=1e-5)


def test_a_features_only_backbone_is_not_compiled_down_to_its_first_stage():
    torch.manual_seed(4)
    backbone = video3d_zoo.create_model("resnet3d_10", widen_factor=0.125, features_only=True).eval()
    fast = optimize_for_inference(backbone, compile=True)
    x = torch.randn(2, *CLIP)
    with pytest.warns(RuntimeWarning, match="only single-tensor entry points are compiled"):
        stages = fast(x)
    with torch.no_grad():
        want = backbone(x)
    assert len(stages) == len(want) > 1
    for got, ref in zip(stages, want):
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)


def test_libraries_unused_for_a_month_are_removed_and_used_ones_kept(tmp_path):
    import os
    import time

    old_key, new_key = "a" * 64, "b" * 64
    for key in (old_key, new_key):
        (tmp_path / f"{key}.0123456789abcdef.so").write_bytes(b"library")
        (tmp_path / f"{key}.json").write_text("{}")
        (tmp_path / f"{key}.lock").write_text("")
    month_ago = time.time() - 31 * 86400
    os.utime(tmp_path / f"{old_key}.json", (month_ago, month_ago))
    removed = compiled.remove_unused(tmp_path)
    assert sorted(p.name for p in removed) == sorted([f"{old_key}.0123456789abcdef.so", f"{old_key}.json"])
    kept = [f"{new_key}.0123456789abcdef.so", f"{new_key}.json", f"{new_key}.lock", f"{old_key}.lock"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)


def test_clips_of_another_length_get_their_own_library_not_an_error():
    model = tiny(seed=5)
    fast = optimize_for_inference(model, compile=True, batch_size=2)
    for frames in (4, 8):
        x = torch.randn(2, 3, frames, 32, 32)
        with torch.no_grad():
            torch.testing.assert_close(fast(x), model(x), rtol=1e-4, atol=1e-5)


def test_libraries_are_called_through_their_c_interface_like_torchs_runner(built):
    from video3d_zoo.inference.compiled_call import LibraryRunner

    _, example, runner, _ = built
    assert isinstance(runner, LibraryRunner)
    reference = torch._C._aoti.AOTIModelContainerRunnerCpu(str(runner.path), 1)
    torch.testing.assert_close(runner.run([example])[0], reference.run([example])[0], rtol=0, atol=0)


def test_a_library_without_the_expected_c_interface_gets_torchs_runner(built, monkeypatch):
    from video3d_zoo.inference import compiled_call

    _, example, runner, _ = built
    monkeypatch.setattr(compiled_call, "_SYMBOLS", (*compiled_call._SYMBOLS, "AOTInductorNoSuchFunction"))
    with pytest.warns(RuntimeWarning, match="through torch's runner.*AOTInductorNoSuchFunction"):
        fallback = compiled_call.load_runner(runner.path)
    assert not isinstance(fallback, compiled_call.LibraryRunner)
    torch.testing.assert_close(fallback.run([example])[0], runner.run([example])[0], rtol=0, atol=0)


class _Matmuls(torch.nn.Module):
    """About 60 ms of single-threaded matrix products per call: long enough to watch another thread."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(384, 384) / 20)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(48):
            x = torch.tanh(x @ self.weight)
        return x


def test_a_python_thread_keeps_running_while_a_compiled_model_computes(tmp_path):
    # torch's runner binding holds the GIL for the whole call: a decoding thread stalled while
    # the model ran (7 % of its speed measured on resnet3d_50), so decoding could not overlap.
    import threading
    import time

    torch.manual_seed(0)
    example = torch.randn(384, 384)
    runner, _ = compiled.load_or_build(_Matmuls().eval(), "forward", example, home=tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runner.run([example])
        started = time.perf_counter()
        runner.run([example])
        call_s = time.perf_counter() - started
        done, count = threading.Event(), [0]

        def count_while_running():
            while not done.is_set():
                count[0] += 1

        counter = threading.Thread(target=count_while_running)
        counter.start()
        time.sleep(0.1)
        before, started = count[0], time.perf_counter()
        time.sleep(call_s)  # the counter's rate with the GIL free, over as long as one call
        idle_rate = (count[0] - before) / (time.perf_counter() - started)
        before, started = count[0], time.perf_counter()
        runner.run([example])
        busy_rate = (count[0] - before) / (time.perf_counter() - started)
        done.set()
        counter.join()
    finally:
        torch.set_num_threads(threads)
    assert call_s > 0.01, "the call is too short to tell"
    assert busy_rate > 0.3 * idle_rate, (busy_rate, idle_rate)


def test_warming_up_loads_the_library_the_first_batch_then_uses(monkeypatch):
    model = tiny(seed=6)
    fast = optimize_for_inference(model, compile=True, batch_size=2)
    assert fast.warm_up("forward_features", CLIP)
    assert fast.compiled_entries == (("forward_features", CLIP),)
    monkeypatch.setattr(compiled, "compile_entry", lambda *a, **k: pytest.fail("compiled a second time"))
    x = torch.randn(2, *CLIP)
    with torch.no_grad():
        torch.testing.assert_close(fast.forward_features(x), model.forward_features(x), rtol=1e-4, atol=1e-5)
    assert not optimize_for_inference(model, compile=False).warm_up("forward", CLIP)  # eager: nothing to do


def _loaded_with_warnings(built, home):
    import warnings

    prepared, example, _, _ = built
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runner, seconds = compiled.load_or_build(prepared, "forward", example, home=home)
    assert seconds == 0.0  # from the cache
    with torch.no_grad():
        torch.testing.assert_close(runner.run([example])[0], prepared(example), rtol=1e-4, atol=1e-5)
    return runner, [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]


def test_a_missing_private_torch_helper_means_torchs_runner_and_one_warning(built, home, monkeypatch):
    from video3d_zoo.inference.compiled_call import LibraryRunner

    monkeypatch.delattr(torch._C._aoti, "unsafe_alloc_void_ptrs_from_tensors")
    runner, [message] = _loaded_with_warnings(built, home)
    assert not isinstance(runner, LibraryRunner)
    assert "torch._C._aoti.unsafe_alloc_void_ptrs_from_tensors" in message and "torch's runner" in message


def test_a_helper_failing_in_the_trial_call_means_torchs_runner_not_an_attribute_error(built, home, monkeypatch):
    from video3d_zoo.inference import compiled_call

    monkeypatch.setattr(compiled_call, "gil_free_problem", lambda: None)  # the helper vanishes after the check
    monkeypatch.delattr(torch._C._aoti, "alloc_tensors_by_stealing_from_void_ptrs")
    runner, [message] = _loaded_with_warnings(built, home)
    assert not isinstance(runner, compiled_call.LibraryRunner) and "AttributeError" in message


def test_another_torch_release_than_the_call_path_was_written_for_gets_torchs_runner(built, home, monkeypatch):
    from video3d_zoo.inference import compiled_call

    monkeypatch.setattr(compiled_call, "WRITTEN_FOR", ((1, 0), (1, 13)))
    runner, [message] = _loaded_with_warnings(built, home)
    assert not isinstance(runner, compiled_call.LibraryRunner)
    assert f"written for torch 1.0 to 1.13, this is torch {torch.__version__}" in message


def test_a_cached_library_that_disagrees_with_eager_in_the_trial_call_is_not_used(built, home, monkeypatch):
    prepared, example, _, _ = built
    real = compiled._eager_output
    monkeypatch.setattr(compiled, "_eager_output", lambda *args: real(*args) + 1.0)
    with pytest.raises(compiled.CompileError, match="disagrees with the eager model"):
        compiled.load_or_build(prepared, "forward", example, home=home)


def test_a_library_is_frozen_whatever_the_callers_grad_mode(tmp_path, monkeypatch):
    """Inductor pre-packs the weights (freezing) only when gradients are off as it compiles; a build started
    with them on - a job's first call, the background build process - made a 3.6x slower library."""
    import torch._inductor.freezing as freezing

    monkeypatch.setenv("VIDEO3D_ZOO_HOME", str(tmp_path / "home"))
    frozen = []
    original = freezing.freeze
    monkeypatch.setattr(freezing, "freeze", lambda *a, **k: frozen.append(1) or original(*a, **k))
    network = prepare_network(tiny(seed=21))
    with torch.enable_grad():
        runner = compiled.compile_entry(network, "forward", 2, CLIP, torch.float32)
        x = torch.randn(2, *CLIP)
        expected = network(x)
        torch.testing.assert_close(runner(x), expected, rtol=1e-3, atol=1e-4)
    assert frozen, "the library was compiled without freezing"


def test_aligned_copies_only_where_a_constant_is_off_a_cache_line():
    from video3d_zoo.inference.compiled_call import ALIGNMENT, aligned_copies

    block = torch.zeros(1024, dtype=torch.uint8)
    assert block.data_ptr() % ALIGNMENT == 0  # torch's allocator
    shifted = block[16:16 + 4 * 64].view(torch.float32)  # 16 bytes past a cache line, as malloc may give
    shifted.copy_(torch.arange(64.0))
    copies = aligned_copies({"weight": shifted, "bias": block[:64].view(torch.float32)})
    assert copies is not None and all(t.data_ptr() % ALIGNMENT == 0 for t in copies.values())
    torch.testing.assert_close(copies["weight"], torch.arange(64.0), rtol=0, atol=0)
    assert aligned_copies({"bias": block[:64].view(torch.float32)}) is None  # aligned already: no copy


def test_every_runner_of_a_library_reads_its_weights_from_aligned_memory(built):
    """AOTInductor puts a CPU library's constants in one malloc block (16-byte aligned): unaligned,
    a compiled bf16 resnet3d_50 ran 1.65x slower.  Several runners in a row land on several offsets."""
    from video3d_zoo.inference.compiled_call import ALIGNMENT, LibraryRunner

    _, example, runner, _ = built
    reference = torch._C._aoti.AOTIModelContainerRunnerCpu(str(runner.path), 1).run([example])[0]
    runners = [LibraryRunner(runner.path) for _ in range(4)]
    for each in runners:
        if each.constants_realigned is None:
            pytest.skip("this torch's libraries cannot swap their constants")
        constants = each.constants()
        strided = [t for t in constants.values() if t.layout == torch.strided and t.numel()]
        assert strided and all(t.data_ptr() % ALIGNMENT == 0 for t in strided)
        torch.testing.assert_close(each.run([example])[0], reference, rtol=0, atol=0)
    del runners  # deleting a runner frees the copies it handed over (no crash, no double free)


def test_swapping_in_the_copies_keeps_the_results_bit_identical(built, monkeypatch):
    from video3d_zoo.inference import compiled_call

    _, example, runner, _ = built
    reference = torch._C._aoti.AOTIModelContainerRunnerCpu(str(runner.path), 1).run([example])[0]
    made = []

    def always_copy(constants):  # whatever offset malloc gave this time, take the swapping path
        made.append({name: tensor.clone() for name, tensor in constants.items()})
        return made[-1]

    monkeypatch.setattr(compiled_call, "aligned_copies", always_copy)
    swapped = compiled_call.LibraryRunner(runner.path)
    if swapped.constants_realigned is None:
        pytest.skip("this torch's libraries cannot swap their constants")
    assert swapped.constants_realigned is True
    in_use = {t.data_ptr() for t in swapped.constants().values() if t.layout == torch.strided and t.numel()}
    assert in_use and in_use <= {t.data_ptr() for t in made[0].values() if t.layout == torch.strided}
    torch.testing.assert_close(swapped.run([example])[0], reference, rtol=0, atol=0)
    torch_side = compiled_call._AlignedTorchRunner(torch._C._aoti.AOTIModelContainerRunnerCpu(str(runner.path), 1))
    assert torch_side.constants_realigned is True
    torch.testing.assert_close(torch_side.run([example])[0], reference, rtol=0, atol=0)


def test_a_refused_swap_leaves_the_library_on_its_own_constants(built, monkeypatch):
    from video3d_zoo.inference import compiled_call

    _, example, runner, _ = built
    reference = torch._C._aoti.AOTIModelContainerRunnerCpu(str(runner.path), 1).run([example])[0]
    monkeypatch.setattr(compiled_call, "aligned_copies", lambda constants: {n: t.clone() for n, t in constants.items()})
    real_call = compiled_call.LibraryRunner._call

    def refusing(self, name, *args):
        if name == "AOTInductorModelContainerUpdateUserManagedConstantBufferPairs":
            raise RuntimeError(f"{name} failed (status 1)")
        return real_call(self, name, *args)

    monkeypatch.setattr(compiled_call.LibraryRunner, "_call", refusing)
    kept = compiled_call.LibraryRunner(runner.path)
    if not hasattr(kept._lib, "AOTInductorModelContainerUpdateUserManagedConstantBufferPairs"):
        pytest.skip("this torch's libraries cannot swap their constants")
    assert kept.constants_realigned is None and kept._constant_handles == []
    torch.testing.assert_close(kept.run([example])[0], reference, rtol=0, atol=0)
