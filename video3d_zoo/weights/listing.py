"""The pretrained-weights table of ``video3d-zoo list --pretrained`` / ``list-pretrained``.

One row per manifest entry: ``model.tag``, parameters, GMACs, frames, data set, top-1 and where
the weights are now.  Everything comes from the manifest (``params`` / ``gmacs`` are recorded
there, counted once by the publishing pipeline) and cheap file checks, so the table of every
entry prints in well under a second - nothing is built, hashed or downloaded.

Where the weights are: ``embedded`` (in the package), ``installed`` (imported or downloaded
before), ``cached`` (the Hub copy is in the huggingface_hub cache), ``downloadable`` (from the
Hub or the original's public URL, on first use) or ``import needed`` (the original must be
fetched by hand and given to ``video3d-zoo import``).
"""

from __future__ import annotations

import fnmatch
from typing import Any, Dict, List, Optional

WHERE = {"embedded": "embedded", "installed": "installed", "cached": "cached", "hub": "downloadable",
         "download": "downloadable", "original only": "import needed", "none": "none"}
COLUMNS = (("model.tag", "name"), ("params", "params"), ("GMACs", "gmacs"), ("frames", "frames"),
           ("data set", "dataset"), ("top-1", "top1"), ("weights", "where"))


def top1(entry) -> Optional[float]:
    """The entry's top-1 accuracy (video level first), or None when only other metrics are recorded."""
    records = [a for a in entry.accuracy if a.metric == "top1"]
    records.sort(key=lambda a: a.level != "video")
    return records[0].value if records else None


def pretrained_rows(pattern: str = "*", manifest=None) -> List[Dict[str, Any]]:
    """One dict per entry matching ``pattern`` (on ``model.tag`` or the model name), sorted by name."""
    from .installed import weights_sources
    from .manifest import load_manifest

    entries = sorted((e for e in (manifest or load_manifest()).entries
                      if fnmatch.fnmatchcase(e.name, pattern) or fnmatch.fnmatchcase(e.model, pattern)),
                     key=lambda e: e.name)
    return [{"name": e.name, "default": e.default, "params": e.params, "gmacs": e.gmacs,
             "frames": e.input_spec.frames, "dataset": e.dataset.name if e.dataset else None, "top1": top1(e),
             "where": WHERE[weights_sources(e).available]} for e in entries]


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key == "params":
        return f"{value / 1e6:.1f}M"
    if key == "gmacs":
        return f"{value:.1f}"
    if key == "top1":
        return f"{value:.1f}"
    return str(value)


def format_table(rows: List[Dict[str, Any]]) -> str:
    """The rows as an aligned text table (``-`` where the manifest records nothing)."""
    cells = [[title for title, _ in COLUMNS]]
    for row in rows:
        cells.append([_cell(key, row[key]) + (" *" if key == "name" and row["default"] else "")
                      for _, key in COLUMNS])
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    numeric = {"params", "gmacs", "frames", "top1"}
    lines = ["  ".join(c.rjust(w) if COLUMNS[i][1] in numeric else c.ljust(w)
                       for i, (c, w) in enumerate(zip(line, widths))).rstrip() for line in cells]
    return "\n".join(lines + ["* default weights of the model (pretrained=True); top-1: '-' where the manifest records "
                               "other metrics only (video3d_zoo.get_weights(NAME).meta['accuracy'])"])


__all__ = ["WHERE", "format_table", "pretrained_rows", "top1"]
