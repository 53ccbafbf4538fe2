"""Publish a converted folder to the Hugging Face Hub and produce its manifest entry.

``video3d-zoo publish DIR --repo-id ORG/NAME [--tag TAG] [--dry-run]`` calls
:func:`publish_folder`, which

1. reads the converted folder (``model.safetensors`` + ``config.json``, as written by
   ``video3d-zoo convert`` / :func:`~video3d_zoo.weights.loading.save_pretrained`);
2. takes the matching manifest entry (``model.tag``) as the template - accuracy, protocol,
   upstream, license - or, for weights the manifest does not know yet, builds one from the
   config (parameters and GMACs counted with :func:`~video3d_zoo.inference.profile.profile`);
3. writes ``config.json`` (with the tag, labels and input spec of the entry) and the model card
   ``README.md`` into the folder (a dry run writes nothing there: into ``card_dir`` if given);
4. unless ``dry_run``, creates the repository and uploads the three files in one commit with
   ``HfApi().create_repo`` / ``HfApi().upload_folder``, then checks the published file's size
   and sha256 at that commit (one HEAD request);
5. returns the finished manifest entry (``hub``: repo_id, filename, revision = the commit id,
   sha256, size; revision is ``None`` for a dry run), ready to paste into
   ``weights_manifest.json``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Dict, Optional, Union

from ..models.config import ModelConfig
from ..errors import CheckpointError, ConfigError, IntegrityError, ManifestError
from ..fileio import write_text_atomic
from .checkpoint_files import CONFIG_NAME, WEIGHTS_NAME, read_safetensors
from ..wording import count

PathLike = Union[str, os.PathLike]
CARD_NAME = "README.md"
METRICS_NAME = "metrics.json"  # written next to the weights by a training run's export
UPLOADED_FILES = (WEIGHTS_NAME, CONFIG_NAME, CARD_NAME, METRICS_NAME)

CITATIONS = {
    "hara2018": """@inproceedings{hara3dcnns,
  author    = {Kensho Hara and Hirokatsu Kataoka and Yutaka Satoh},
  title     = {Can Spatiotemporal 3D CNNs Retrace the History of 2D CNNs and ImageNet?},
  booktitle = {Proceedings of the IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},
  pages     = {6546--6555},
  year      = {2018}
}""",
    "kataoka2020": """@article{kataoka2020megascale,
  author  = {Hirokatsu Kataoka and Tenga Wakamiya and Kensho Hara and Yutaka Satoh},
  title   = {Would Mega-scale Datasets Further Enhance Spatiotemporal 3D CNNs?},
  journal = {arXiv preprint arXiv:2004.04968},
  year    = {2020}
}""",
    "tran2018": """@inproceedings{tran2018closer,
  author    = {Du Tran and Heng Wang and Lorenzo Torresani and Jamie Ray and Yann LeCun and Manohar Paluri},
  title     = {A Closer Look at Spatiotemporal Convolutions for Action Recognition},
  booktitle = {Proceedings of the IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2018}
}""",
}
_SPDX_CARD = {"MIT": "mit", "BSD-3-Clause": "bsd-3-clause", "Apache-2.0": "apache-2.0"}


def _read_folder(folder: Path) -> ModelConfig:
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"{folder}: no {WEIGHTS_NAME}; make the folder with `video3d-zoo convert SRC -o {folder}`")
    config_file = folder / CONFIG_NAME
    if config_file.is_file():
        return ModelConfig.from_json(config_file.read_text(encoding="utf-8"), str(config_file))
    _, embedded = read_safetensors(weights)
    if embedded is None:
        raise ConfigError(f"{folder}: neither {CONFIG_NAME} nor a config embedded in {WEIGHTS_NAME}")
    return embedded


def _template_entry(config: ModelConfig, tag: str, manifest) -> Dict[str, Any]:
    """The manifest's entry for ``model.tag`` (checked against the folder), or a new one."""
    from .manifest import WeightsEntry

    known: Optional[WeightsEntry] = None
    if manifest is not None:
        known = next((e for e in manifest.entries if e.model == config.architecture and e.tag == tag), None)
    if known is not None:
        problems = []
        if dict(known.arch_kwargs) != dict(config.arch_kwargs):
            problems.append(f"arch_kwargs {dict(config.arch_kwargs)} vs manifest {dict(known.arch_kwargs)}")
        if known.num_classes != config.num_classes:
            problems.append(f"num_classes {config.num_classes} vs manifest {known.num_classes}")
        if problems:
            raise ConfigError(f"the folder does not hold the weights of {known.name}: " + "; ".join(problems))
        return known.to_dict()
    from ..inference.profile import profile

    spec = config.input_spec
    result = profile(config.architecture, frames=spec.frames, size=spec.crop_size, num_classes=config.num_classes,
                     init_weights=False, **dict(config.arch_kwargs))
    return {"model": config.architecture, "tag": tag, "default": False,
            "arch_kwargs": dict(config.arch_kwargs), "dataset": None, "num_classes": config.num_classes,
            "labels": list(config.labels) if config.labels is not None else None,
            "labels_source": None if config.labels is not None else "unknown (fill in before publishing)",
            "input_spec": spec.to_dict(), "accuracy": [], "params": result.params,
            "gmacs": round(result.gmacs, 4),
            "upstream": None, "license": None, "hub": None}


def _accuracy_from_metrics(metrics: Dict[str, Any], dataset: Optional[str]) -> list:
    """The manifest's accuracy records (percent) of a training run's ``metrics.json``."""
    data = (metrics.get("config") or {}).get("data") or {}
    name = dataset or f"{data.get('format', 'unknown')} data at {data.get('root', 'unknown')}"
    records = []
    for level in ("video", "clip"):
        for metric in ("top1", "top5"):
            value = metrics.get(f"{level}_{metric}")
            if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1:
                records.append({"dataset": name, "split": metrics.get("evaluated_on"), "metric": metric,
                                "value": round(100.0 * value, 2), "level": level, "crops": 1, "clips": None,
                                "source": f"video3d_zoo.train ({METRICS_NAME} of the run)", "note": None})
    return records


def _architecture_text(description: str) -> str:
    """A registry description without its claims about which weights exist (the card says what these are)."""
    text = re.sub(r"\s*\([^()]*\bweights\b[^()]*\)", "", description)   # "(2017 Kinetics weights)"
    text = re.sub(r";[^;.]*\bweights\b[^;.]*", "", text)                 # "; 2017 and 2020 Kinetics weights"
    return re.sub(r"(^|(?<=\. ))[^.]*\bweights\b[^.]*\.\s*", "", text).strip()


def _fmt_number(value: Optional[float], digits: int = 2) -> str:
    return "unknown" if value is None else f"{value:.{digits}f}"


def _origin_lines(entry: Dict[str, Any], release: str, metrics: Optional[Dict[str, Any]]) -> list:
    """How the weights were made: a converted original, a training run of this package, or not recorded."""
    upstream = entry.get("upstream")
    if upstream:
        return [f"Converted from `{upstream.get('file', 'an original checkpoint')}` ({release}) to the "
                "video3d_zoo layout; numerically identical to the original network.", ""]
    if metrics is None:
        return ["How these weights were made is not recorded (no upstream original in the manifest and no "
                f"`{METRICS_NAME}` from a training run).", ""]
    cfg = metrics.get("config") or {}
    data, model = cfg.get("data") or {}, cfg.get("model") or {}
    start = (f"fine-tuned from the `{model['pretrained']}` weights of `{model.get('name', 'the model')}`"
             if model.get("pretrained") else "trained from scratch (random initialisation)" if model else None)
    lines = [f"Trained with video3d_zoo (`video3d-zoo train`, config `{Path(str(cfg.get('source') or 'not recorded')).name}`) "
             f"on `{data.get('format', 'unknown')}` data from `{data.get('root', 'unknown')}`"
             f"{', ' + start if start else ''}: "
             f"{count(metrics.get('epochs', '?'), 'epoch')}, "
             f"{count(metrics.get('train_videos', '?'), 'training video')}, "
             f"{count(metrics.get('processes', 1), 'process')}, {metrics.get('weights', 'last')} weights exported. "
             f"The full config is in `{METRICS_NAME}`.", "",
             f"Evaluated on {metrics.get('evaluated_on', 'not recorded')} (softmax averaged over the clips of "
             "each video for video-level numbers):", "", "| metric | value |", "|---|---|"]
    lines += [f"| {key} | {value:.4f} |" for key, value in metrics.items()
              if key.endswith(("top1", "top5")) and isinstance(value, (int, float))]
    return lines + [""]


def _classes_text(entry: Dict[str, Any], dataset: Optional[str]) -> str:
    labels, num = entry.get("labels"), entry["num_classes"]
    where = f" ({dataset})" if dataset else ""
    if isinstance(labels, (list, tuple)):
        shown = ", ".join(f"`{name}`" for name in labels[:20])
        return f"{num}{where}: {shown}{', ...' if len(labels) > 20 else ''}"
    return f"{num}{where}"


def _usage_lines(model: str, tag: str, repo_id: str, inp: Dict[str, Any], known: bool) -> list:
    lines = ["## Usage", "", "```python", "import torch", "import video3d_zoo", "",
             f'model = video3d_zoo.load_model("hf-hub:{repo_id}")  # downloads, checks sha256 against the Hub',
             f"clip = torch.randn(1, 3, {inp['frames']}, {inp['crop_size']}, {inp['crop_size']})  "
             "# preprocessed as above",
             "logits = model(clip)", "```", "",
             f"On the command line: `video3d-zoo classify video.mp4 --model hf-hub:{repo_id}`."]
    if known:
        lines += ["", f"Listed in video3d_zoo's weights manifest as `{model}.{tag}`: "
                  f"`video3d_zoo.create_model({model!r}, pretrained={tag!r})`, and with `num_classes=10` "
                  "the same backbone with a fresh classifier for fine-tuning."]
    return lines + [""]


def model_card(entry: Dict[str, Any], repo_id: str, sha256: str, size: int,
               metrics: Optional[Dict[str, Any]] = None) -> str:
    """The ``README.md`` of a published entry (YAML header + Markdown); ``metrics``: a run's ``metrics.json``."""
    from ..models.registry import get_model_spec

    model, tag = entry["model"], entry["tag"]
    spec = get_model_spec(model)
    upstream = entry.get("upstream") or {}
    release = upstream.get("release") or spec.origin
    license_id = entry.get("license")
    inp = entry["input_spec"]
    dataset = (entry.get("dataset") or {}).get("name")
    pretrained_on = (entry.get("dataset") or {}).get("pretrained_on")
    resize = inp["resize"]
    resize_text = (f"resize to {resize[0]}x{resize[1]} (height x width)" if isinstance(resize, list)
                   else f"resize the short side to {resize}")
    value_text = "0-255 (raw pixel values)" if inp["value_scale"] == 255.0 else "0-1 (pixels / 255)"
    tags = ["video-classification", "action-recognition", "3d-cnn", "pytorch", "safetensors", spec.family]
    lines = ["---", f"license: {_SPDX_CARD.get(license_id, 'other') if license_id else 'other'}",
             "library_name: video3d-zoo", "pipeline_tag: video-classification", "tags:"]
    lines += [f"- {t}" for t in tags]
    lines += ["---", "", f"# {model}.{tag}", "", _architecture_text(spec.description), ""]
    lines += _origin_lines(entry, release, metrics)
    lines += ["## Model", "", "| | |", "|---|---|", f"| architecture | `{model}` |",
              f"| architecture arguments | `{json.dumps(entry.get('arch_kwargs') or {})}` |",
              f"| parameters | {entry['params']:,} ({entry['params'] / 1e6:.2f} M) |" if entry.get("params")
              else "| parameters | unknown |",
              f"| GMACs per {inp['frames']}x{inp['crop_size']}x{inp['crop_size']} clip | "
              f"{_fmt_number(entry.get('gmacs'))} (fvcore; 1 MAC = 1 multiply-add, about 2 FLOPs) |",
              f"| classes | {_classes_text(entry, dataset)} |"]
    if pretrained_on:
        lines.append(f"| pretrained on | {pretrained_on} |")
    lines.append("")
    if entry.get("labels") is None and entry.get("labels_source"):
        lines += [f"Class names are not bundled: {entry['labels_source']}", ""]
    elif isinstance(entry.get("labels"), str):
        lines += [f"Class names: in `config.json` (`labels`); the list `{entry['labels']}` shipped with "
                  f"video3d_zoo. {entry.get('labels_source') or ''}".rstrip(), ""]
    lines += ["## Accuracy", ""]
    accuracy = entry.get("accuracy") or []
    if not accuracy and metrics is not None:
        lines.append(f"See above: the evaluation of the training run (`{METRICS_NAME}`).")
    elif accuracy:
        lines += ["| dataset | split | metric | value | protocol | source |", "|---|---|---|---|---|---|"]
        for acc in accuracy:
            metric = {"top1": "top-1", "top5": "top-5", "mean_top1_top5": "mean of top-1 and top-5"}.get(
                acc["metric"], acc["metric"])
            level = f"{acc['level']}-level" if acc.get("level") else "level not stated"
            views = ", ".join(str(x) for x in (
                f"{acc['crops']} crop(s)" if acc.get("crops") else None,
                (count(acc["clips"], "clip") if isinstance(acc.get("clips"), int) else acc.get("clips"))) if x)
            lines.append(f"| {acc['dataset']} | {acc.get('split') or 'not stated'} | {metric} | {acc['value']} | "
                         f"{level}{', ' + views if views else ''} | {acc['source']} |")
        notes = [acc["note"] for acc in accuracy if acc.get("note")]
        lines += [""] + [f"- {n}" for n in dict.fromkeys(notes)]
    else:
        lines.append("No accuracy was published for these weights.")
    if entry.get("accuracy_note"):
        lines += ["", entry["accuracy_note"]]
    lines += ["", "## Input", "",
              f"- clips of {inp['frames']} frames, {resize_text}, centre crop {inp['crop_size']}x{inp['crop_size']}",
              f"- RGB values {value_text}, then subtract mean {inp['mean']} and divide by std {inp['std']} "
              f"(same scale; preset `{inp['name']}`)",
              "- tensor layout N x C x T x H x W", ""]
    lines += _usage_lines(model, tag, repo_id, inp, known=bool(upstream))
    lines += ["## Files", "", f"Repository `{repo_id}`.", "", f"- `{WEIGHTS_NAME}`: sha256 `{sha256}`, {size:,} bytes",
              f"- `{CONFIG_NAME}`: architecture, classes and input spec"]
    if upstream:
        lines.append(f"- original: `{upstream.get('file')}`" + (f", {upstream['url']}" if upstream.get("url") else ""))
    lines += ["", "## Citation", "", "```bibtex"]
    keys = ["hara2018"]
    if release == "kenshohara2020":
        keys.append("kataoka2020")
    if release == "torchvision" or spec.origin == "torchvision":
        keys = ["tran2018", "hara2018"]
    lines += ["\n\n".join(CITATIONS[k] for k in keys), "```", ""]
    lines += ["## License", "", license_id or "unknown"]
    if entry.get("license_note"):
        lines += ["", entry["license_note"]]
    lines.append("")
    return "\n".join(lines)


def publish_folder(folder: PathLike, repo_id: str, tag: Optional[str] = None, *, dry_run: bool = False,
                   manifest: Any = None, private: bool = False, commit_message: Optional[str] = None,
                   token: Optional[str] = None, api: Any = None, verify_remote: bool = True,
                   card_dir: Optional[PathLike] = None) -> Dict[str, Any]:
    """Publish a converted folder; return its finished manifest entry (see the module docstring).

    Args:
        folder: converted folder (``model.safetensors`` + ``config.json``).
        repo_id: ``ORG/NAME`` of the Hub model repository (created if missing).
        tag: manifest tag (``k700_16f``); default: the ``tag`` in ``config.json``.
        dry_run: return the entry, upload nothing (``hub.revision`` is ``None``) and change nothing
            on disk: ``README.md`` and ``config.json`` as they would be published go to ``card_dir``
            if given (it may be ``folder`` itself), else nowhere.
        manifest: a :class:`~video3d_zoo.weights.manifest.Manifest` or a path; default: the active manifest
            (``$VIDEO3D_ZOO_MANIFEST`` or the packaged one).  Its ``model.tag`` entry is the template.
        private: create the repository private.
        api: an ``HfApi``-like object (tests); default ``huggingface_hub.HfApi(token=token)``.
        verify_remote: after the upload, HEAD the file at the new commit and compare size / sha256.
    """
    from .hub import sha256_file
    from .manifest import Manifest, load_manifest, parse_manifest

    if card_dir is not None and not dry_run:
        raise ConfigError("card_dir (--card-dir) is for a dry run; a publish writes README.md and config.json "
                          "into the folder it uploads")
    folder = Path(folder)
    config = _read_folder(folder)
    tag = tag or config.tag
    if not tag:
        raise ConfigError(f"{folder}: config.json has no tag; pass --tag (e.g. k700_16f)")
    if manifest is None:
        try:
            manifest = load_manifest()
        except ManifestError:
            manifest = None
    elif not isinstance(manifest, Manifest):
        manifest = load_manifest(manifest)
    entry = _template_entry(config, tag, manifest)

    # config.json as published: the entry's tag, labels and input spec
    labels = entry.get("labels")
    if isinstance(labels, str):  # the name of a class list shipped in the package
        from .labels import load_label_set

        labels = load_label_set(labels)
    published_config = config.replace(
        tag=tag, input_spec=entry["input_spec"], labels=tuple(labels) if labels is not None else config.labels)

    weights = folder / WEIGHTS_NAME
    sha256, size = sha256_file(weights), weights.stat().st_size
    metrics_file = folder / METRICS_NAME
    metrics = json.loads(metrics_file.read_text(encoding="utf-8")) if metrics_file.is_file() else None
    if metrics is not None and not entry.get("accuracy"):
        entry["accuracy"] = _accuracy_from_metrics(metrics, (entry.get("dataset") or {}).get("name"))
    card = model_card(entry, repo_id, sha256, size, metrics)
    # a dry run changes nothing on disk unless asked to show its files (``card_dir``)
    out = folder if not dry_run else (Path(card_dir) if card_dir is not None else None)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / CONFIG_NAME, published_config.to_json() + "\n")
        write_text_atomic(out / CARD_NAME, card)

    revision = None
    if not dry_run:
        if api is None:
            from huggingface_hub import HfApi

            api = HfApi(token=token)
        api.create_repo(repo_id, repo_type="model", exist_ok=True, private=private)
        info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model",
                                 allow_patterns=[n for n in UPLOADED_FILES if (folder / n).is_file()],
                                 commit_message=commit_message or f"video3d_zoo: {entry['model']}.{tag}")
        revision = getattr(info, "oid", None)
        if not (isinstance(revision, str) and len(revision) == 40):
            raise ConfigError(f"the upload to {repo_id} returned no commit id ({info!r})")
        if verify_remote:
            _verify_remote(repo_id, WEIGHTS_NAME, revision, sha256, size)
    entry["hub"] = {"repo_id": repo_id, "filename": WEIGHTS_NAME, "revision": revision, "sha256": sha256,
                    "size": size}
    check = dict(entry, hub=None if dry_run else entry["hub"])
    parse_manifest({"schema_version": 1, "entries": [check]}, path=f"entry for {entry['model']}.{tag}")
    return entry


def _verify_remote(repo_id: str, filename: str, revision: str, sha256: str, size: int) -> None:
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    from .hub import endpoint

    url = hf_hub_url(repo_id, filename, revision=revision, endpoint=endpoint())
    meta = get_hf_file_metadata(url)
    etag = (meta.etag or "").lower()
    if meta.size != size or (len(etag) == 64 and etag != sha256):
        raise IntegrityError(f"{url}: the Hub reports {meta.size} bytes / sha256 {etag or 'unknown'}, the local "
                             f"file has {size} bytes / {sha256}; the upload did not publish this file")

