#!/usr/bin/env python3
"""The maintainers' one command: every original -> golden check -> converted folder -> Hub -> manifest ``hub`` fields.

    python scripts/publish_all.py --org video3d-zoo -o converted/                      # everything
    python scripts/publish_all.py --org video3d-zoo -o converted/ --originals ~/dl/    # + files downloaded by hand
    python scripts/publish_all.py -o converted/ --only 'r3d_18.*,mc3_18.*' --dry-run   # convert and check only

For every manifest entry (``--only``: shell patterns on ``model.tag``, comma-separated):

1. **the original**: found by its release name under ``--originals`` (any sub-folder; default
   ``<output>/originals/``), else downloaded from its public URL into its ``downloaded/`` folder and verified against the
   manifest's sha256 (or the hash in torchvision's file name) - a file that fails is removed
   (:mod:`video3d_zoo.weights.upstream`).  Entries whose originals are neither here nor public
   (Google Drive folders) are listed as missing, with where to get them;
2. **the golden case** of its release file, where ``--golden`` (default ``tests/data/golden``)
   has one (``released_file`` of the case, or ``torchvision_<model>``): the case's weights, saved
   in the released layout under the released name, must convert and reproduce the reference
   logits and features within the case's tolerance - the converter is proven for that file
   before anything is published.  A failing entry is not published;
3. **convert, check, publish** the rest with ``scripts/convert_all.py``: sha256, architecture,
   classes, frames and parameter count against the entry, the zoo folder and model card, the
   upload to ``ORG/<model>.<tag>`` (``--dry-run``: nothing uploaded), and the manifest written
   with every published entry's ``hub`` (``<output>/weights_manifest.json``, or ``--in-place``).

The exit status is 1 if any entry failed a check (each is reported), 0 otherwise; missing
originals are reported, not failures.
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib.util
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "data" / "golden"


def _module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def golden_cases(folder: Path) -> Dict[str, Path]:
    """Release file name (or ``torchvision_<model>``) -> golden case file."""
    import json

    found = {}
    for path in sorted(folder.glob("*.json")):
        case = json.loads(path.read_text(encoding="utf-8"))
        key = case.get("checkpoint", {}).get("released_file") or (
            case["name"] if case.get("era") == "torchvision" else None)
        if key:
            found[key] = path
    return found


def golden_case_for(entry, cases: Dict[str, Path]) -> Optional[Path]:
    names = [entry.upstream.file, *entry.upstream.alternate_files] if entry.upstream else []
    return next((cases[n] for n in names + [f"torchvision_{entry.model}"] if n in cases), None)


def check_golden(entry, case_path: Path, recipe) -> str:
    """Step 2 for one entry: a line saying how close the outputs came; raises ValueError past tolerance."""
    from collections import OrderedDict

    import numpy as np
    import torch

    from video3d_zoo.weights.loading import from_pretrained

    case = recipe.load_case(case_path)
    sd = OrderedDict((k, torch.from_numpy(v)) for k, v in recipe.case_state_dict(case).items())
    keys = case["checkpoint"]["wrapper_keys"]
    obj = {k: {"state_dict": sd, "arch": case["checkpoint"].get("arch"), "epoch": 200}.get(k, {}) for k in keys} \
        if keys else sd
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / (case["checkpoint"].get("released_file") or entry.upstream.file)
        torch.save(obj, file)
        model = from_pretrained(file)
    # the first clip of the case's input only: in eval mode each clip is computed on its own, so the
    # reference's first row is its answer, at a fraction of the cost of the whole batch
    x = torch.from_numpy(recipe.case_input(case))[:1]
    with torch.no_grad():
        logits = model(x).numpy()
        features = model.forward_head(model.forward_features(x), pre_logits=True).numpy()
    ref_logits, ref_features = (r[:1] for r in recipe.case_reference(case))
    tol = case["suggested_tolerance"]
    d_logits, d_features = float(np.abs(logits - ref_logits).max()), float(np.abs(features - ref_features).max())
    if d_logits > tol["atol"] or d_features > tol["features_atol"]:
        raise ValueError(f"golden case {case['name']}: largest difference {d_logits:.2e} (logits) / "
                         f"{d_features:.2e} (features), tolerance {tol['atol']:.1e} / {tol['features_atol']:.1e}")
    return f"golden {case['name']}: largest difference {d_logits:.1e} (logits), {d_features:.1e} (features)"


def fetch_originals(entries, originals: Path, download: bool, find_original) -> List[str]:
    """Step 1: download the public originals not found locally; the names of entries that failed."""
    from video3d_zoo.errors import Video3DZooError
    from video3d_zoo.weights.upstream import download_original, download_url

    failed = []
    for entry in entries:
        up = entry.upstream
        if up is None or find_original(originals, [up.file, *up.alternate_files]) is not None:
            continue
        if download and download_url(entry):
            try:
                download_original(entry, originals / "downloaded")
                print(f"downloaded {entry.name}: {up.file} (sha256 verified)")
            except Video3DZooError as exc:
                failed.append(entry.name)
                print(f"FAILED {entry.name}: {exc}", file=sys.stderr)
    return failed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("-o", "--output", type=Path, required=True, help="folder for originals and converted folders")
    parser.add_argument("--originals", type=Path,
                        help="folder holding originals downloaded by hand (default: OUTPUT/originals)")
    parser.add_argument("--org", help="Hub organisation or user (required unless --dry-run)")
    parser.add_argument("--only", default="*", help="shell patterns on model.tag, comma-separated")
    parser.add_argument("--manifest", type=Path, default=ROOT / "weights_manifest.json")
    parser.add_argument("--golden", type=Path, default=GOLDEN, help="folder of golden cases and recipe.py")
    parser.add_argument("--no-download", action="store_true", help="use local originals only")
    parser.add_argument("--dry-run", action="store_true", help="convert, check and write model cards; upload nothing")
    parser.add_argument("--in-place", action="store_true", help="write the updated manifest over --manifest")
    parser.add_argument("--force", action="store_true", help="also redo entries that are already published")
    args = parser.parse_args(argv)
    if not args.dry_run and not args.org:
        parser.error("--org is required unless --dry-run")

    sys.path.insert(0, str(ROOT))
    from video3d_zoo.weights.manifest import load_manifest

    convert_all = _module(Path(__file__).with_name("convert_all.py"), "convert_all")
    manifest = load_manifest(args.manifest)
    patterns = args.only.split(",")
    entries = [e for e in manifest.entries if any(fnmatch.fnmatchcase(e.name, p) for p in patterns)
               and (args.force or not e.published)]
    originals = args.originals or args.output / "originals"
    originals.mkdir(parents=True, exist_ok=True)
    failed = fetch_originals(entries, originals, not args.no_download, convert_all.find_original)

    cases = golden_cases(args.golden) if args.golden.is_dir() else {}
    recipe = _module(args.golden / "recipe.py", "recipe") if cases else None
    checked = []
    for entry in entries:
        case = golden_case_for(entry, cases)
        if entry.name in failed:
            continue
        if case is None:
            checked.append(entry.name)  # no golden case: convert_all's checks alone
            continue
        try:
            print(f"{entry.name}: {check_golden(entry, case, recipe)}")
            checked.append(entry.name)
        except Exception as exc:  # report and go on: the entry is not published
            failed.append(entry.name)
            print(f"FAILED {entry.name}: {exc.__class__.__name__}: {exc}", file=sys.stderr)
    if not checked:
        print(f"nothing to publish ({len(failed)} failed)")
        return 1 if failed else 0
    forwarded = [str(originals), "-o", str(args.output), "--only", ",".join(checked), "--manifest", str(args.manifest)]
    forwarded += ["--org", args.org] if args.org else []
    forwarded += [flag for flag, on in (("--dry-run", args.dry_run), ("--in-place", args.in_place),
                                        ("--force", args.force)) if on]
    status = convert_all.main(forwarded)
    return 1 if failed or status else 0


if __name__ == "__main__":
    sys.exit(main())
