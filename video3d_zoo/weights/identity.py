"""Release files keep their identity: a checkpoint named and shaped like a manifest entry *is* that entry.

``r3d50_K_200ep.pth`` converts, from its tensors alone, to a ResNet-50 with 700 classes; only the
weights manifest knows that these are the Kinetics-700 weights ``resnet3d_50.k700_16f``, with
their class names, tag and input spec.  :func:`release_entry` finds the entry whose
``upstream.file`` (or one of its ``alternate_files``) is the file's name, and accepts it only
when the converted tensors agree with it in every respect :func:`disagreements` checks (the
same confirmation ``video3d-zoo import`` makes); :func:`with_release_identity` then gives the
converted checkpoint the entry's config, so ``from_pretrained``, ``convert`` (``config.json``)
and every command that loads a path see the same names as ``--model resnet3d_50.k700_16f``.
A renamed or different file keeps what its tensors say, nothing more.
"""

from __future__ import annotations

from typing import List, Optional

from ..errors import Video3DZooError


def disagreements(converted, entry) -> List[str]:
    """What a converted original says that its manifest entry does not (empty when they agree)."""
    config, up = converted.config, entry.upstream
    out = []
    if config.architecture != entry.model:
        out.append(f"architecture {config.architecture} (the entry: {entry.model})")
    elif dict(config.arch_kwargs) != dict(entry.arch_kwargs):
        out.append(f"arguments {dict(config.arch_kwargs)} (the entry: {dict(entry.arch_kwargs)})")
    if config.num_classes != entry.num_classes:
        out.append(f"{config.num_classes} classes (the entry: {entry.num_classes})")
    if config.in_chans != 3:
        out.append(f"{config.in_chans} input channels (the entry: 3)")
    if up is not None and up.layout and converted.layout != up.layout:
        out.append(f"the {converted.layout} layout (the entry: {up.layout})")
    spec, want = config.input_spec, entry.input_spec
    if spec.frames != want.frames:
        out.append(f"{spec.frames} frames (the entry: {want.frames})")
    elif spec != want:
        out.append(f"the {spec.name} input convention (the entry: {want.name})")
    return out


def release_entry(filename: str, converted, manifest):
    """The manifest entry released as ``filename`` whose tensors ``converted`` matches, else None.

    ``manifest`` is a manifest or a function loading one (``load_manifest``: this module imports no
    manifest code, the manifest's listing reaches the installer, which imports this).  An
    unreadable manifest (a broken ``$VIDEO3D_ZOO_MANIFEST``) only costs the identity: the file
    still loads as what its tensors say.
    """
    if converted.layout == "zoo" or not filename:
        return None
    try:
        manifest = manifest() if callable(manifest) else manifest
    except Video3DZooError:
        return None
    for entry in manifest.entries:
        up = entry.upstream
        if up is not None and filename in (up.file,) + tuple(up.alternate_files):
            if not disagreements(converted, entry):
                return entry
    return None


def with_release_identity(converted, filename: str, manifest):
    """``converted`` with its release entry's config (labels, tag, input spec) and metadata, if it has one."""
    entry: Optional[object] = release_entry(filename, converted, manifest)
    if entry is None:
        return converted
    up = entry.upstream
    converted.config = entry.to_config().replace(source=f"{up.release}:{filename}")
    converted.metadata = {**entry.metadata(), **(converted.metadata or {})}
    return converted


__all__ = ["disagreements", "release_entry", "with_release_identity"]
