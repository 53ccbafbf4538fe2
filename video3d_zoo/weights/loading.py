"""The one glue step from a checkpoint (file, folder or loaded object) to a ready model.

* :func:`~video3d_zoo.weights.checkpoint_files.read_checkpoint` reads zoo folders,
  ``.safetensors`` and pickled ``.pth`` files safely.
* :func:`load_converted` builds the architecture *without* random initialisation (meta
  device, then the tensors are assigned) and loads strictly: any missing, unexpected or
  mis-shaped tensor is an error that lists them.
* :func:`from_pretrained` = read + convert + build, with no architecture named by the user.
* :func:`save_pretrained` writes ``model.safetensors`` + ``config.json`` atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch
from torch import nn

from .checkpoint_files import CONFIG_NAME, WEIGHTS_NAME, PathLike, read_checkpoint
from ..models.config import CONFIG_METADATA_KEY, ModelConfig
from ..models.layout import KENSHOHARA2020, ZOO
from .convert import ConvertedCheckpoint, convert_checkpoint, to_zoo_layout
from ..errors import CheckpointError, ConfigError, WeightsNotFoundError, WeightsUnavailableError
from ..fileio import atomic_path
from ..layers import adapt_input_conv
from ..models.registry import family_of, get_model_spec
from .resolve import ModelRef, parse_model_ref
from .tensor_checks import check_finite, check_materialised_size, compact_state_dict, match_dtypes


# -- building ------------------------------------------------------------------------------------
def build_empty(config: ModelConfig) -> nn.Module:
    """The architecture of ``config`` on the meta device (no memory, no initialisation)."""
    spec = get_model_spec(config.architecture)
    try:
        with torch.device("meta"):
            model = spec.builder(num_classes=config.num_classes, in_chans=config.in_chans,
                                 init_weights=False, **dict(config.arch_kwargs))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"cannot build {config.architecture!r} with {dict(config.arch_kwargs)}: {exc}") from exc
    return model


def check_state_dict(model: nn.Module, sd: Mapping[str, torch.Tensor], what: str) -> None:
    """Raise :class:`CheckpointError` listing every missing, unexpected or mis-shaped tensor."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    shapes = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(v.shape)}"
              for k, v in expected.items() if k in sd and tuple(sd[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
            if items:
                shown = "; ".join(items[:12]) + (f"; ... ({len(items)} in all)" if len(items) > 12 else "")
                parts.append(f"{label}: {shown}")
        raise CheckpointError(f"{what} does not fit exactly - " + " | ".join(parts))


def load_converted(converted: ConvertedCheckpoint, num_classes: Optional[int] = None,
                   in_chans: Optional[int] = None, allow_nonfinite: bool = False, features_only: bool = False,
                   out_indices=None) -> nn.Module:
    """Build the model a converted checkpoint describes and load it strictly.

    ``num_classes`` different from the checkpoint's keeps the backbone and gives a freshly
    initialised head; ``in_chans`` different from 3 adapts the stem (see
    :func:`~video3d_zoo.layers.adapt_input_conv`).  ``features_only`` turns the loaded model into
    a backbone returning the ``out_indices`` stage outputs (classifier dropped), after loading.

    Refused with :class:`CheckpointError`, before anything large is allocated: tensors that
    would take far more memory than their source (see :mod:`video3d_zoo.weights.tensor_checks`); weights
    that are not real floating point where the model's are; and NaN / inf values or negative BatchNorm
    running variances unless ``allow_nonfinite=True``.  Other float precisions are cast to the model's.
    """
    config = converted.config
    what = (f"{converted.origin}: " if converted.origin else "") + \
        f"checkpoint for {config.architecture} ({converted.layout} layout)"
    sd = dict(converted.state_dict)
    check_materialised_size(sd, converted.source_bytes, what)
    model = build_empty(config)
    check_state_dict(model, sd, what)
    sd = match_dtypes(model.state_dict(), sd, what)  # e.g. float16 -> float32; complex or integer: refused
    sd = compact_state_dict(sd)  # views and expanded tensors become real, owned tensors
    if not allow_nonfinite:
        check_finite(sd, what)
    model.load_state_dict(sd, strict=True, assign=True)
    model.eval()
    if in_chans is not None and in_chans != config.in_chans:
        _adapt_stem(model, config.architecture, in_chans)
        config = config.replace(in_chans=in_chans)
    if num_classes is not None and num_classes != config.num_classes:
        model.reset_classifier(num_classes)
        config = config.replace(num_classes=num_classes, labels=None)
    model.config = config
    model.weights_metadata = dict(converted.metadata or {})
    if features_only:
        model.as_backbone(out_indices)
    return model


def _adapt_stem(model: nn.Module, architecture: str, in_chans: int) -> None:
    """Adapt the stem convolution its family names (``FamilySpec.stem_conv``) to ``in_chans``."""
    family = family_of(architecture)
    for module_name in family.stem_convs:
        try:
            conv = model.get_submodule(module_name)
        except AttributeError:
            continue
        conv.weight = nn.Parameter(adapt_input_conv(conv.weight.detach(), in_chans))
        conv.in_channels = in_chans
        model.in_chans = in_chans
        return
    raise CheckpointError(f"{architecture}: no stem convolution {family.stem_convs} to adapt to in_chans "
                          f"(FamilySpec.stem_conv of {family.name!r} in {family.source_file})")


def from_pretrained(source: Union[PathLike, Mapping[str, Any]], num_classes: Optional[int] = None,
                    in_chans: Optional[int] = None, allow_nonfinite: bool = False, features_only: bool = False,
                    out_indices=None) -> nn.Module:
    """A ready model (eval mode) from a zoo checkpoint, an original 3D-ResNets-PyTorch checkpoint
    (2017 or 2020 release) or a torchvision video ResNet state dict - no architecture needed.

    ``source`` is a path (file or folder), an already loaded checkpoint object, an
    ``hf-hub:ORG/REPO[@REVISION]`` reference to a Hub repository holding a zoo folder, or a
    :class:`~video3d_zoo.weights.resolve.ModelRef` of one of those.  Weights
    with NaN / inf or negative running variances are refused unless ``allow_nonfinite=True``.
    ``features_only`` / ``out_indices``: a backbone of stage outputs, as in ``create_model``.
    """
    ref = None
    if not isinstance(source, Mapping):
        ref = source if isinstance(source, ModelRef) else parse_model_ref(source, expect="path")
    converted = convert_checkpoint(source) if ref is None else _convert_ref(ref)
    return load_converted(converted, num_classes=num_classes, in_chans=in_chans, allow_nonfinite=allow_nonfinite,
                          features_only=features_only, out_indices=out_indices)


def load_pretrained(name: str, pretrained: Any, num_classes: Optional[int] = None, in_chans: int = 3,
                    arch_kwargs: Optional[Mapping[str, Any]] = None, allow_nonfinite: bool = False,
                    features_only: bool = False, out_indices=None) -> nn.Module:
    """The one path from ``create_model(name, pretrained=...)`` to a loaded model.

    ``pretrained`` is ``True`` (the model's default weights from the weights manifest) or what
    :func:`~video3d_zoo.weights.resolve.parse_model_ref` reads with ``expect="tag"``: a tag or
    alias from the manifest, a local path (file or folder), or ``hf-hub:ORG/REPO[@REVISION]``.
    ``allow_nonfinite``, ``features_only`` and ``out_indices``: see :func:`load_converted`.
    """
    ref = None if pretrained is True else (
        pretrained if isinstance(pretrained, ModelRef) else parse_model_ref(pretrained, expect="tag"))
    if ref is not None and ref.kind in ("path", "hf-hub"):
        converted = _convert_ref(ref)
    else:
        converted = fetch_converted(name, True if ref is None else ref.tag)
    if converted.config.architecture != name:
        raise CheckpointError(f"{ref.describe() if ref else 'the default weights'} holds a "
                              f"{converted.config.architecture} checkpoint, not {name}; use from_pretrained() to "
                              "load it as what it is")
    if arch_kwargs:
        merged = {**converted.config.arch_kwargs, **arch_kwargs}
        converted.config = converted.config.replace(arch_kwargs=merged)
    return load_converted(converted, num_classes=num_classes, in_chans=in_chans, allow_nonfinite=allow_nonfinite,
                          features_only=features_only, out_indices=out_indices)


def _convert_ref(ref: ModelRef) -> ConvertedCheckpoint:
    """Read and convert the checkpoint a ``"path"`` or ``"hf-hub"`` reference names (a missing file is
    a :class:`CheckpointError` from :func:`read_checkpoint`, whatever the entry point)."""
    if ref.kind == "path":
        return convert_source(ref.path)
    if ref.kind != "hf-hub":
        raise ConfigError(f"{ref.describe()!r} names a model or weights tag, not a checkpoint: load it with "
                          "load_model() or create_model()")
    from .hub_repos import fetch_hub_folder

    converted = convert_source(fetch_hub_folder(ref.repo_id, ref.revision))
    converted.config = converted.config.replace(source=ref.describe())
    return converted


def convert_source(source: Union[PathLike, Mapping[str, Any]]) -> ConvertedCheckpoint:
    """Read (if a path) and convert a checkpoint to the zoo layout.

    A zoo folder or ``model.safetensors`` carries its config: the model is built from it, and
    the tensors are not asked what architecture they are (only stray prefixes / counters are
    tidied).  Other checkpoints are recognised from their tensors (:func:`convert_checkpoint`).
    """
    if isinstance(source, Mapping):
        return convert_checkpoint(source)
    obj, config = read_checkpoint(source)
    try:
        converted = _convert_read(obj, config, Path(source).name)
    except CheckpointError as exc:  # what is wrong with the tensors, said of the file they came from
        if str(source) in str(exc):
            raise
        raise type(exc)(f"{source}: {exc}") from exc
    converted.origin, converted.source_bytes = str(source), _source_size(Path(source))
    return converted


def _convert_read(obj: Any, config: Optional[ModelConfig], name: str) -> ConvertedCheckpoint:
    if config is not None:
        result = to_zoo_layout(obj, filename=name, layout=KENSHOHARA2020)  # the zoo's own
        return ConvertedCheckpoint(result.state_dict, config, result.layout)
    from .identity import with_release_identity
    from .manifest import load_manifest

    # a file named and shaped like a manifest entry's release file gets the entry's labels, tag and spec
    return with_release_identity(convert_checkpoint(obj, filename=name), name, load_manifest)


def _source_size(path: Path) -> int:
    """Bytes of the file the tensors were read from (a folder's is its weights file)."""
    return (path / WEIGHTS_NAME if path.is_dir() else path).stat().st_size


# -- manifest entries ----------------------------------------------------------------------------------
def unavailable_error(entry, home: Optional[Path] = None) -> WeightsUnavailableError:
    """The error for a manifest entry whose weights are nowhere to be loaded from, in both forms."""
    from .installed import weights_home

    home = home or weights_home()
    return WeightsUnavailableError(unavailable_message(entry, home, cli=False),
                                   unavailable_message(entry, home, cli=True), entry=entry)


def unavailable_message(entry, home: Optional[Path] = None, cli: bool = False) -> str:
    """Why ``entry`` cannot be loaded and the three ways to get its weights, as commands (``cli``) or Python."""
    from .installed import weights_home

    home = home or weights_home()
    model, tag, name = entry.model, entry.tag, entry.name
    folder = f"./{name}"
    lines = [f"{name}: no weights to load. Looked for them, in this order: embedded in the package (no), "
             f"installed in {home} (not imported), on the Hugging Face Hub (not published: the manifest entry's "
             "'hub' is null)."]
    up = entry.upstream
    if up is not None:
        alt = f" (or {', '.join(up.alternate_files)})" if up.alternate_files else ""
        where = f", hosted at {up.url}" if up.url else ""
        lines.append(f"The original is {up.file}{alt}, released with {up.release}{where}.")
        if up.sha256 or up.sha256_prefix:
            lines.append(f"Its sha256 {'is' if up.sha256 else 'starts with'} {up.sha256 or up.sha256_prefix}.")
        source = up.file
    else:
        lines.append("The manifest does not record where the original checkpoint lives.")
        source = "<original checkpoint>"
    lines.append("Three ways to get the weights:")
    if cli:
        lines += [
            "1. import the original once (a file, or a folder holding it); afterwards the name works offline:",
            f"       video3d-zoo import {source}",
            f"       video3d-zoo classify VIDEO --model {name}",
            "2. convert it to a folder and pass the folder's path:",
            f"       video3d-zoo convert {source} -o {folder}",
            f"       video3d-zoo classify VIDEO --model {folder}",
            "3. the Hub, once the converted file is published: a release of the package whose manifest has it (or "
            "VIDEO3D_ZOO_MANIFEST pointing to one) downloads it by name; a zoo folder published on the Hub "
            "loads as --model hf-hub:ORG/REPO",
        ]
    else:
        lines += [
            "1. import the original once (a file, or a folder holding it); afterwards the name works offline:",
            f"       video3d_zoo.import_weights([{source!r}])",
            f"       model = video3d_zoo.create_model({model!r}, pretrained={tag!r})",
            "2. convert it to a folder and load that path:",
            f"       video3d_zoo.save_pretrained(video3d_zoo.from_pretrained({source!r}), {folder!r})",
            f"       model = video3d_zoo.create_model({model!r}, pretrained={folder!r})",
            "3. the Hub, once the converted file is published: a release of the package whose manifest has it (or "
            "VIDEO3D_ZOO_MANIFEST pointing to one) downloads it by name; a zoo folder published on the Hub "
            "loads as video3d_zoo.create_model(\"hf-hub:ORG/REPO\")",
        ]
    return "\n".join(lines)


def fetch_converted(name: str, pretrained: Any = True, manifest=None) -> ConvertedCheckpoint:
    """Find, verify (sha256) and read the weights ``pretrained`` selects for ``name``; the config is the
    manifest entry's.

    One resolution order, first found wins:

    1. **embedded** - a file shipped inside the package;
    2. **installed** - converted from the original by ``video3d-zoo import`` /
       :func:`video3d_zoo.import_weights` (:mod:`video3d_zoo.weights.installed`);
    3. **Hub** - the published file, from the huggingface_hub cache when it is there (no network),
       else downloaded and verified (:func:`video3d_zoo.weights.hub.download`);
    4. **public original** - an ``upstream.url`` with a checksum (torchvision's files): downloaded,
       verified, converted and installed once (:mod:`video3d_zoo.weights.upstream`), then as 2.;
    5. otherwise :class:`WeightsUnavailableError`, explaining the three ways to get the weights.
    """
    from .hub import download, verify_file
    from .installed import find_installed
    from .manifest import load_manifest

    entry = (manifest or load_manifest()).resolve(name, pretrained)
    config = entry.to_config()
    if entry.embedded is not None:
        from importlib.resources import files

        path = Path(str(files("video3d_zoo").joinpath(*entry.embedded.path.split("/"))))
        if not path.is_file():
            raise WeightsNotFoundError(f"{entry.name}: the packaged file {path} is missing; reinstall video3d-zoo")
        verify_file(path, entry.embedded.sha256, entry.embedded.size, what=f"{entry.name} ({path})")
    elif (installed := find_installed(entry)) is not None:
        path = installed.path
        config = config.replace(source=f"installed:{path}")
    elif entry.hub is not None:
        path = download(entry.hub)
    elif (installed := _install_public_original(entry, manifest)) is not None:
        path = installed.path
        config = config.replace(source=f"installed:{path}")
    else:
        raise unavailable_error(entry)
    state_dict, _ = read_checkpoint(path)
    return ConvertedCheckpoint(state_dict=state_dict, config=config, layout=ZOO,
                               origin=f"{entry.name} ({path})", source_bytes=Path(path).stat().st_size,
                               metadata=entry.metadata())


def _install_public_original(entry, manifest):
    """Step 4 of :func:`fetch_converted`: a public original (torchvision's files) downloaded, verified and
    installed on first use (:mod:`video3d_zoo.weights.upstream`); None when the entry has none."""
    from .manifest import load_manifest
    from .originals import install_from_upstream

    # conversion is passed in: the installer sits below this module, which it must not import
    return install_from_upstream(entry, manifest or load_manifest(), convert_source, load_converted)


# -- writing -------------------------------------------------------------------------------------
def save_pretrained(model: nn.Module, out_dir: PathLike, config: Optional[ModelConfig] = None) -> Path:
    """Write ``model.safetensors`` (config embedded in its metadata) and ``config.json`` to ``out_dir``.

    Both files are written to temporaries first and renamed into place only once both are
    complete, so an interrupted or failed save never leaves a half-written file where a good one
    was.  The tensors are written compactly (each its own contiguous storage, see
    :func:`~video3d_zoo.weights.tensor_checks.compact_state_dict`).
    """
    from .safetensors_write import save_aligned

    config = config or getattr(model, "config", None)
    if config is None:
        raise ConfigError("save_pretrained needs a ModelConfig (model.config is not set)")
    if getattr(model, "features_only", False):
        raise ConfigError("save_pretrained writes full models; this is a features-only backbone (classifier and "
                          "later stages dropped), which loads from the full model's weights with features_only=True")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a folder; save_pretrained writes a folder "
                          f"({WEIGHTS_NAME} + {CONFIG_NAME}) and does not replace a file")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    sd = compact_state_dict({k: v.cpu() for k, v in model.state_dict().items()})
    text = config.to_json()
    try:
        with atomic_path(out / WEIGHTS_NAME) as weights_tmp, atomic_path(out / CONFIG_NAME) as config_tmp:
            save_aligned(sd, weights_tmp, metadata={CONFIG_METADATA_KEY: text, "format": "pt"})
            config_tmp.write_text(text + "\n", encoding="utf-8")
    except BaseException:
        if created and not any(out.iterdir()):  # a failed save leaves no empty folder of its own behind
            out.rmdir()
        raise
    return out


def convert_to_folder(source: PathLike, out_dir: PathLike, allow_nonfinite: bool = False) -> Path:
    """``video3d-zoo convert``: any supported checkpoint -> zoo folder (safetensors + config.json).

    The checkpoint is read and checked completely before ``out_dir`` is touched, so a refused
    conversion leaves an existing folder as it was.
    """
    model = from_pretrained(source, allow_nonfinite=allow_nonfinite)
    return save_pretrained(model, out_dir)
