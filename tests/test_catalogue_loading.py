"""A catalogue of bad inputs to every load path: each is refused with a clear error, and nothing lost.

Every case builds its bad input here (small files, tiny models), then checks that

* each load path it can reach raises the expected error type, with key phrases in the message;
* the CLI, where one applies (``convert``, ``list-pretrained``), returns exit status 2 and says why;
* what was there before (an existing output folder, the cache of another revision) is unchanged.

Hub cases run against tests/hub_server.py on 127.0.0.1 only.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest
import torch

from hub_server import HubServer

from video3d_zoo import create_model, from_pretrained
from video3d_zoo.cli.commands import main as cli_main
from video3d_zoo.models.config import InputSpec, ModelConfig
from video3d_zoo.errors import CheckpointError, ConfigError, IntegrityError, ManifestError
from video3d_zoo.weights.hub import remove_cached
from video3d_zoo.weights.manifest import MANIFEST_ENV, dumps, load_manifest, parse_manifest
from video3d_zoo.weights.tensor_checks import check_materialised_size, compact_state_dict
from video3d_zoo.weights.loading import convert_to_folder, save_pretrained

ARCH, KW, CLASSES = "resnet3d_10", {"widen_factor": 0.125}, 5
REPO, FILE = "test-org/catalogue", "model.safetensors"


@pytest.fixture(autouse=True)
def _no_hang():
    """A FIFO opened for reading blocks forever: turn a hang into a failure."""
    def fail(*_):
        raise TimeoutError("the test hung (a FIFO opened for reading?)")
    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return create_model(ARCH, num_classes=CLASSES, **KW).eval()


def tiny_sd(model) -> "OrderedDict[str, torch.Tensor]":
    return OrderedDict((k, v.clone()) for k, v in model.state_dict().items())


def snapshot(paths: List[Path]) -> Dict[str, Any]:
    """Content of every file (bytes) and link (target) under ``paths``."""
    out: Dict[str, Any] = {}
    for root in paths:
        items = [root] if not root.is_dir() or root.is_symlink() else sorted(root.rglob("*"))
        for p in items:
            if p.is_symlink():
                out[str(p)] = ("link", os.readlink(p))
            elif p.is_file():
                out[str(p)] = ("file", p.read_bytes())
    return out


# -- the catalogue ---------------------------------------------------------------------------------
@dataclass
class Prepared:
    loaders: Dict[str, Callable[[], Any]]  # each must raise the case's error
    cli: Optional[List[str]] = None  # argv whose exit status must be 2
    keep: List[Path] = field(default_factory=list)  # must be byte-identical afterwards
    after: Optional[Callable[[], None]] = None  # a last check (e.g. a clean cache)


@dataclass
class Ctx:
    tmp: Path
    tiny: Any
    monkeypatch: Any
    request: Any

    @property
    def hub(self) -> HubServer:
        return self.request.getfixturevalue("hub_env")


@dataclass
class Case:
    id: str
    error: type
    phrases: Tuple[str, ...]
    prepare: Callable[[Ctx], Prepared]


def checkpoint_case(ctx: Ctx, src: Path) -> Prepared:
    """A bad checkpoint file or folder: every load path, and ``convert`` over an existing folder."""
    out = save_pretrained(ctx.tiny, ctx.tmp / "existing_out")
    return Prepared(
        loaders={"from_pretrained": lambda: from_pretrained(src),
                 "create_model": lambda: create_model(ARCH, pretrained=str(src)),
                 "convert_to_folder": lambda: convert_to_folder(src, out)},
        cli=["convert", str(src), "-o", str(out)], keep=[out])


def saved(ctx: Ctx, sd, name="bad.pth") -> Path:
    torch.save({"epoch": 1, "arch": "resnet-10", "state_dict": sd, "optimizer": {}, "scheduler": {}},
               ctx.tmp / name)
    return ctx.tmp / name


def nan_weight(ctx):
    sd = tiny_sd(ctx.tiny)
    sd["layer1.0.conv1.weight"].view(-1)[0] = float("nan")
    return checkpoint_case(ctx, saved(ctx, sd))


def inf_buffer(ctx):
    sd = tiny_sd(ctx.tiny)
    sd["bn1.running_mean"][0] = float("inf")
    return checkpoint_case(ctx, saved(ctx, sd))


def negative_running_var(ctx):
    sd = tiny_sd(ctx.tiny)
    sd["layer2.0.bn1.running_var"][1] = -0.5
    return checkpoint_case(ctx, saved(ctx, sd))


def edited_config(ctx, old: str, new: str):
    folder = save_pretrained(ctx.tiny, ctx.tmp / "src_folder")
    text = (folder / "config.json").read_text()
    assert old in text
    (folder / "config.json").write_text(text.replace(old, new, 1))
    return checkpoint_case(ctx, folder)


def value_scale_inf_config(ctx):  # 1e999 is valid JSON and parses as inf
    return edited_config(ctx, '"value_scale": 1.0', '"value_scale": 1e999')


def infinity_literal_config(ctx):
    return edited_config(ctx, '"value_scale": 1.0', '"value_scale": Infinity')


def zero_stride(ctx):
    """A full-width resnet3d_10 whose every tensor is one element expanded: ~10 KB on disk, 58 MB in memory."""
    with torch.device("meta"):
        shapes = {k: (v.shape, v.dtype) for k, v in create_model(ARCH).state_dict().items()}
    sd = OrderedDict((k, torch.ones(1, dtype=dt).reshape([1] * len(s)).expand(s)) for k, (s, dt) in shapes.items())
    src = saved(ctx, sd, "expanded.pth")
    assert src.stat().st_size < 200_000
    return checkpoint_case(ctx, src)


def absurd_tensor(ctx):
    sd = tiny_sd(ctx.tiny)
    # 6.1 GiB once materialised, with a class count inside the bound (limits.py) so the size check speaks
    sd["fc.weight"] = torch.zeros(1, 1).expand(100_000, 1 << 14)
    return checkpoint_case(ctx, saved(ctx, sd, "absurd.pth"))


def fifo_checkpoint(ctx):
    os.mkfifo(ctx.tmp / "weights.pth")
    return checkpoint_case(ctx, ctx.tmp / "weights.pth")


def folder_without_weights(ctx):
    (ctx.tmp / "empty_folder").mkdir()
    (ctx.tmp / "empty_folder" / "config.json").write_text(ctx.tiny.config.to_json())
    return checkpoint_case(ctx, ctx.tmp / "empty_folder")


def manifest_case(ctx: Ctx, path: Path) -> Prepared:
    """A bad manifest: load_manifest, create_model through $VIDEO3D_ZOO_MANIFEST and list-pretrained."""
    ctx.monkeypatch.setenv(MANIFEST_ENV, str(path))
    return Prepared(loaders={"load_manifest": lambda: load_manifest(path),
                             "create_model": lambda: create_model(ARCH, pretrained=True)},
                    cli=["list-pretrained"], keep=[path] if path.is_file() else [])


def entry(ctx: Ctx, tag="tiny_16f", default=True, sha256="0" * 64, size=1, revision="0" * 40) -> dict:
    return {"model": ARCH, "tag": tag, "default": default, "arch_kwargs": KW, "num_classes": CLASSES,
            "input_spec": ctx.tiny.config.input_spec.to_dict(),
            "hub": {"repo_id": REPO, "filename": FILE, "revision": revision, "sha256": sha256, "size": size}}


def write_manifest(ctx: Ctx, entries: List[dict], name="manifest.json") -> Path:
    path = ctx.tmp / name
    path.write_text(dumps({"schema_version": 1, "aliases": {}, "entries": entries}), encoding="utf-8")
    return path


def value_scale_inf_manifest(ctx):
    path = write_manifest(ctx, [entry(ctx)])
    path.write_text(path.read_text().replace('"value_scale": 1.0', '"value_scale": 1e999'))
    return manifest_case(ctx, path)


def infinity_literal_manifest(ctx):
    path = write_manifest(ctx, [entry(ctx)])
    path.write_text(path.read_text().replace('"value_scale": 1.0', '"value_scale": -Infinity'))
    return manifest_case(ctx, path)


def manifest_is_a_folder(ctx):
    (ctx.tmp / "manifest_dir").mkdir()
    return manifest_case(ctx, ctx.tmp / "manifest_dir")


def manifest_is_a_fifo(ctx):
    os.mkfifo(ctx.tmp / "manifest.json")
    return manifest_case(ctx, ctx.tmp / "manifest.json")


def publish(ctx: Ctx, data: bytes, entries_kw: List[dict]) -> Tuple[List[str], Path]:
    """Serve ``data`` once per entry (one commit each) and point the manifest at them."""
    commits = [ctx.hub.add_file(REPO, FILE, data) for _ in entries_kw]
    entries = [entry(ctx, **{"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "revision": c, **kw})
               for c, kw in zip(commits, entries_kw)]
    path = write_manifest(ctx, entries, f"manifest-{len(list(ctx.tmp.glob('manifest-*')))}.json")
    ctx.monkeypatch.setenv(MANIFEST_ENV, str(path))
    return commits, path


def storage(ctx: Ctx) -> Path:
    return ctx.tmp / "hf_home" / "hub" / f"models--{REPO.replace('/', '--')}"


def oversize_download(ctx):
    data = (save_pretrained(ctx.tiny, ctx.tmp / "pub") / FILE).read_bytes()
    publish(ctx, data, [{}])
    ctx.hub.extra_body = 3 << 20  # HEAD advertises the manifest's size; the body is 3 MiB longer

    def clean():
        left = [p for p in storage(ctx).rglob("*") if p.is_file() or p.is_symlink()]
        assert left == [], left
        assert ("GET", f"/{REPO}/resolve/{ctx.hub.repos[REPO].branches['main']}/{FILE}") in ctx.hub.requests
    return Prepared(loaders={"create_model": lambda: create_model(ARCH, pretrained=True)}, after=clean)


def shared_blob_wrong_sha(ctx):
    """Two revisions, same bytes, one blob; then entry b's sha256 is wrong: a's cache must survive."""
    data = (save_pretrained(ctx.tiny, ctx.tmp / "pub") / FILE).read_bytes()
    (rev_a, rev_b), _ = publish(ctx, data, [{"tag": "a"}, {"tag": "b", "default": False}])
    create_model(ARCH, pretrained="a"), create_model(ARCH, pretrained="b")
    wrong = write_manifest(ctx, [entry(ctx, tag="a", sha256=hashlib.sha256(data).hexdigest(), size=len(data),
                                      revision=rev_a),
                                entry(ctx, tag="b", default=False, sha256="f" * 64, size=len(data), revision=rev_b)],
                          "manifest-wrong.json")
    ctx.monkeypatch.setenv(MANIFEST_ENV, str(wrong))
    blob = storage(ctx) / "blobs" / hashlib.sha256(data).hexdigest()

    def a_still_cached():
        assert not (storage(ctx) / "snapshots" / rev_b / FILE).exists()  # b's bad link is gone
        gets = len([r for r in ctx.hub.requests if r[0] == "GET"])
        ctx.hub.stop()  # a loads from the cache alone
        assert torch.equal(create_model(ARCH, pretrained="a").fc.weight, ctx.tiny.fc.weight)
        assert len([r for r in ctx.hub.requests if r[0] == "GET"]) == gets
    return Prepared(loaders={"create_model": lambda: create_model(ARCH, pretrained="b")},
                    keep=[blob, storage(ctx) / "snapshots" / rev_a], after=a_still_cached)


def nan_from_the_hub(ctx):
    sd = tiny_sd(ctx.tiny)
    sd["fc.weight"][0, 0] = float("nan")
    bad = create_model(ARCH, num_classes=CLASSES, **KW)
    bad.load_state_dict(sd)
    publish(ctx, (save_pretrained(bad, ctx.tmp / "pub") / FILE).read_bytes(), [{}])
    return Prepared(loaders={"create_model": lambda: create_model(ARCH, pretrained=True)})


NONFINITE = "hold NaN or infinite values"
CASES = [
    Case("nan_weight", CheckpointError, (NONFINITE, "layer1.0.conv1.weight (1 NaN, 0 inf"), nan_weight),
    Case("inf_buffer", CheckpointError, (NONFINITE, "bn1.running_mean (0 NaN, 1 inf"), inf_buffer),
    Case("negative_running_var", CheckpointError, ("running variance(s) are negative",
                                                   "layer2.0.bn1.running_var (1 negative"), negative_running_var),
    Case("value_scale_inf_config", ConfigError, ("config.json", "value_scale", "positive finite number"),
         value_scale_inf_config),
    Case("infinity_literal_config", ConfigError, ("config.json", "Infinity is not allowed"),
         infinity_literal_config),
    Case("zero_stride_checkpoint", CheckpointError, ("once materialised", "expanded (zero-stride)", "conv"),
         zero_stride),
    Case("absurd_single_tensor", CheckpointError, ("fc.weight (100000, 16384)", "more than 4.0 GiB"),
         absurd_tensor),
    Case("fifo_checkpoint", CheckpointError, ("FIFO (named pipe)", "not read"), fifo_checkpoint),
    Case("folder_without_weights", CheckpointError, ("without a readable model.safetensors",),
         folder_without_weights),
    Case("value_scale_inf_manifest", ManifestError, ("entries[0] (resnet3d_10.tiny_16f).input_spec",
                                                     "value_scale", "finite"), value_scale_inf_manifest),
    Case("infinity_literal_manifest", ManifestError, ("-Infinity is not allowed",), infinity_literal_manifest),
    Case("manifest_is_a_folder", ManifestError, ("is a folder", "expected a JSON file"), manifest_is_a_folder),
    Case("manifest_is_a_fifo", ManifestError, ("not a regular file",), manifest_is_a_fifo),
    Case("oversize_download", IntegrityError, ("the server sent more than the", "bytes the manifest states",
                                               "nothing was kept in the cache"), oversize_download),
    Case("shared_blob_wrong_sha", IntegrityError, ("sha256 mismatch", "f" * 64), shared_blob_wrong_sha),
    Case("nan_from_the_hub", CheckpointError, (NONFINITE, "fc.weight (1 NaN", "resnet3d_10.tiny_16f"),
         nan_from_the_hub),
]


@pytest.fixture
def hub_env(monkeypatch, tmp_path):
    """A local Hub server, HF_HOME in tmp, no retries, no proxy for 127.0.0.1."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_ASSETS_CACHE", "HF_HUB_OFFLINE",
                "TRANSFORMERS_OFFLINE", "VIDEO3D_ZOO_VERIFY", "HF_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    with HubServer() as server:
        for var, value in (("HF_HOME", str(tmp_path / "hf_home")), ("HF_ENDPOINT", server.endpoint),
                           ("HF_HUB_ETAG_TIMEOUT", "5"), ("VIDEO3D_ZOO_HUB_RETRIES", "0"),
                           ("NO_PROXY", "127.0.0.1,localhost"), ("no_proxy", "127.0.0.1,localhost"),
                           ("HF_HUB_DISABLE_PROGRESS_BARS", "1")):
            monkeypatch.setenv(var, value)
        yield server


@pytest.mark.filterwarnings("ignore:.*sha256 mismatch:UserWarning")
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_clearly_and_nothing_is_lost(case, tiny, tmp_path, monkeypatch, request, capsys):
    prepared = case.prepare(Ctx(tmp_path, tiny, monkeypatch, request))
    before = snapshot(prepared.keep)
    assert before or not prepared.keep
    for name, load in prepared.loaders.items():
        with pytest.raises(case.error) as info:
            load()
        for phrase in case.phrases:
            assert phrase in str(info.value), f"{name}: {phrase!r} not in {info.value}"
    if prepared.cli is not None:
        capsys.readouterr()
        assert cli_main(prepared.cli) == 2
        err = capsys.readouterr().err
        assert all(phrase in err for phrase in case.phrases), err
    assert snapshot(prepared.keep) == before
    if prepared.after is not None:
        prepared.after()


# -- the opt-out -----------------------------------------------------------------------------------
def test_allow_nonfinite_loads_the_nan_model(tiny, tmp_path):
    sd = tiny_sd(tiny)
    sd["layer1.0.conv1.weight"].view(-1)[0] = float("nan")
    src = tmp_path / "nan.pth"
    torch.save(sd, src)
    for model in (from_pretrained(src, allow_nonfinite=True),
                  create_model(ARCH, pretrained=str(src), allow_nonfinite=True),
                  from_pretrained(convert_to_folder(src, tmp_path / "out", allow_nonfinite=True),
                                  allow_nonfinite=True)):
        assert torch.isnan(model.layer1[0].conv1.weight).sum() == 1
        assert "allow_nonfinite" not in model.config.arch_kwargs


def test_allow_nonfinite_never_reaches_the_architecture_builder():
    model = create_model(ARCH, num_classes=3, allow_nonfinite=True, **KW)  # random weights: a no-op
    assert "allow_nonfinite" not in model.config.arch_kwargs and model.fc.out_features == 3


# -- the pieces ------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, 0.0, -1.0, True])
def test_input_spec_value_scale_must_be_positive_and_finite(value):
    with pytest.raises(ConfigError, match="value_scale: expected a positive finite number"):
        InputSpec(value_scale=value)


def test_input_spec_mean_and_std_must_stay_finite():
    with pytest.raises(ConfigError, match="mean: expected 3 finite numbers"):
        InputSpec(mean=(0.5, math.nan, 0.5))
    with pytest.raises(ConfigError, match="std: expected 3 finite numbers"):
        InputSpec(std=(0.5, math.inf, 0.5))


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_config_json_refuses_non_finite_literals(literal):
    text = json.dumps({"architecture": ARCH, "num_classes": 2, "arch_kwargs": {"widen_factor": 0.5}})
    with pytest.raises(ConfigError, match=f"{literal} is not allowed"):
        ModelConfig.from_json(text.replace("0.5", literal))
    with pytest.raises(ConfigError, match="arch_kwargs.widen_factor: expected a finite number"):
        ModelConfig(architecture=ARCH, num_classes=2, arch_kwargs={"widen_factor": math.inf})


def test_manifest_non_finite_numbers_name_entry_and_field(tiny):
    raw = entry(Ctx(Path("."), tiny, None, None))
    raw["input_spec"]["value_scale"] = math.inf
    raw["accuracy"] = [{"dataset": "k400", "metric": "top1", "value": math.nan, "source": "paper"}]
    raw["arch_kwargs"] = {"widen_factor": math.nan}
    with pytest.raises(ManifestError) as info:
        parse_manifest({"schema_version": 1, "entries": [raw]})
    text = str(info.value)
    where = "entries[0] (resnet3d_10.tiny_16f)"
    assert f"{where}.input_spec: value_scale: expected a positive finite number, got inf" in text
    assert f"{where}.accuracy[0].value: expected a percentage in [0, 100], got nan" in text
    assert f"{where}.arch_kwargs.widen_factor: expected a finite number" in text


def test_remove_cached_keeps_a_blob_another_snapshot_links_to(tmp_path):
    repo = tmp_path / "models--org--name"
    (repo / "blobs").mkdir(parents=True)
    blob = repo / "blobs" / ("a" * 64)
    blob.write_bytes(b"weights")
    for rev in ("1" * 40, "2" * 40):
        (repo / "snapshots" / rev).mkdir(parents=True)
        (repo / "snapshots" / rev / FILE).symlink_to(Path("..", "..", "blobs", blob.name))
    remove_cached("org/name", FILE, "2" * 40, tmp_path)
    assert not (repo / "snapshots" / ("2" * 40) / FILE).is_symlink()
    assert blob.read_bytes() == b"weights" and (repo / "snapshots" / ("1" * 40) / FILE).read_bytes() == b"weights"
    remove_cached("org/name", FILE, "1" * 40, tmp_path)  # the last user: the blob goes too
    assert not blob.exists() and not (repo / "snapshots" / ("1" * 40) / FILE).is_symlink()


def test_expanded_tensors_within_the_budget_load_compact_and_train_in_place(tiny, tmp_path):
    sd = tiny_sd(tiny)
    sd["layer1.0.bn1.running_var"] = torch.ones(1).expand_as(sd["layer1.0.bn1.running_var"])
    sd["layer1.0.bn1.weight"] = sd["layer1.0.bn2.weight"]  # shares storage with another entry
    torch.save(sd, tmp_path / "views.pth")
    model = from_pretrained(tmp_path / "views.pth")
    for name, t in list(model.state_dict().items()):
        assert t.is_contiguous() and t.untyped_storage().nbytes() == t.numel() * t.element_size(), name
    model.layer1[0].bn1.running_var.add_(1.0)  # would fail on a zero-stride view
    assert torch.equal(model.layer1[0].bn1.running_var, torch.full_like(model.layer1[0].bn1.running_var, 2.0))
    folder = save_pretrained(model, tmp_path / "out")  # safetensors refuses shared storage: compact it first
    assert torch.equal(from_pretrained(folder).layer1[0].bn1.weight, tiny.layer1[0].bn2.weight)


def test_size_rule_is_checked_from_shapes_before_allocating():
    huge = {"w": torch.zeros(1).expand(1 << 16, 1 << 14)}  # 4 GiB of float32 if materialised
    with pytest.raises(CheckpointError, match=r"would take 4\.0 GiB once materialised.*w \(65536, 16384\)"):
        check_materialised_size(huge, 1000, "test")
    check_materialised_size({"w": torch.zeros(10)}, None, "test")  # an in-memory dict: its own storage
    compacted = compact_state_dict({"a": torch.arange(6.0)[1:4], "b": torch.zeros(1).expand(3)})
    assert all(t.untyped_storage().nbytes() == 12 for t in compacted.values())


def test_unreadable_manifest_is_a_manifest_error(tmp_path, monkeypatch):
    path = tmp_path / "manifest.json"
    path.write_bytes(b"\xff\xfe{not utf-8")
    with pytest.raises(ManifestError, match="cannot read the weights manifest"):
        load_manifest(path)
    path.write_text("{}")  # a new version, not the cached one

    def denied(self, *args, **kwargs):  # what a mode-000 file gives a non-root user
        raise PermissionError(13, "Permission denied", str(self))
    monkeypatch.setattr(Path, "read_text", denied)
    with pytest.raises(ManifestError, match="cannot read the weights manifest.*Permission denied"):
        load_manifest(path)
