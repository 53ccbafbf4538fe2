#!/usr/bin/env python3
"""Copy the root ``weights_manifest.json`` into the package (``video3d_zoo/data/``).

The root file is the one that is edited; the package ships a byte-identical copy so that an
installed (non-editable) package reads the same manifest.  The root file is validated first
(an invalid manifest is never copied).

    python scripts/sync_manifest.py          # validate the root file and copy it
    python scripts/sync_manifest.py --check  # exit 1 if the two files differ (CI)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "weights_manifest.json"
PACKAGED = ROOT / "video3d_zoo" / "data" / "weights_manifest.json"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if the copy differs")
    parser.add_argument("--no-validate", action="store_true", help="copy without validating (not recommended)")
    args = parser.parse_args(argv)

    source = SOURCE.read_bytes()
    if args.check:
        packaged = PACKAGED.read_bytes() if PACKAGED.is_file() else None
        if packaged != source:
            state = "is missing" if packaged is None else "differs from"
            print(f"{PACKAGED.relative_to(ROOT)} {state} {SOURCE.name}; run: python scripts/sync_manifest.py",
                  file=sys.stderr)
            return 1
        print(f"{PACKAGED.relative_to(ROOT)} is identical to {SOURCE.name}")
        return 0
    if not args.no_validate:
        sys.path.insert(0, str(ROOT))
        from video3d_zoo.errors import ManifestError
        from video3d_zoo.weights.manifest import load_manifest

        try:
            manifest = load_manifest(SOURCE)
        except ManifestError as exc:
            print(f"not copied: {exc}", file=sys.stderr)
            return 1
        print(f"{SOURCE.name}: valid, {len(manifest.entries)} entries")
    PACKAGED.parent.mkdir(parents=True, exist_ok=True)
    tmp = PACKAGED.with_suffix(".json.tmp")
    tmp.write_bytes(source)
    tmp.replace(PACKAGED)
    print(f"copied to {PACKAGED.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
