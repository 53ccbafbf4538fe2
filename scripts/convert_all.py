#!/usr/bin/env python3
"""The maintainers' pipeline: original ``.pth`` files -> converted folders -> Hub -> manifest entries.

Download the originals once (the folders and URLs are in each entry's ``upstream``), put them in
one folder (any sub-folder layout; files are found by name), then run, with network access and a
Hub token that may write to ORG::

    python scripts/convert_all.py ORIGINALS/ -o converted/ --org video3d-zoo            # everything
    python scripts/convert_all.py ORIGINALS/ -o converted/ --org video3d-zoo --only 'resnet3d_50.*'
    python scripts/convert_all.py ORIGINALS/ -o converted/ --org video3d-zoo --dry-run  # no upload

For every manifest entry (``--only`` filters by shell pattern on ``model.tag``):

1. find ``upstream.file`` (or one of ``upstream.alternate_files``) under ORIGINALS;
2. check its sha256 against ``upstream.sha256`` / ``upstream.sha256_prefix`` when the manifest
   records one (``--no-verify-upstream`` skips this), and record the sha256 when it did not;
3. convert it (``video3d_zoo.weights.loading.convert_source``) and check that architecture, arguments,
   classes and frames are exactly the entry's, then build + load strictly and compare the
   parameter count with the entry's ``params``;
4. write ``converted/<model>.<tag>/`` (``model.safetensors`` + ``config.json``);
5. publish it (:func:`video3d_zoo.weights.publish.publish_folder`) to ``ORG/<model>.<tag>``
   (``--repo-template``), which writes the model card and returns the entry with ``hub`` filled.

Results: ``converted/entries.jsonl`` (one finished entry per line) and, unless ``--dry-run``,
``converted/weights_manifest.json``: the input manifest with every published entry's ``hub``
(and newly learnt upstream sha256) filled in, validated.  Copy it over the root file (or pass
``--in-place``); the package reads the root file through its link.  Entries already published are
skipped unless ``--force``.  The exit status is 1 if any entry failed (each is reported).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]


def find_original(originals: Path, names: List[str]) -> Optional[Path]:
    for name in names:
        direct = originals / name
        if direct.is_file():
            return direct
        found = sorted(p for p in originals.rglob(name) if p.is_file())
        if found:
            return found[0]
    return None


def convert_entry(entry, original: Path, out_dir: Path, verify_upstream: bool = True) -> Dict[str, object]:
    """Steps 2-4 for one entry; returns {"folder", "original_sha256"}; raises on any mismatch."""
    from video3d_zoo.weights.hub import sha256_file
    from video3d_zoo.weights.identity import disagreements
    from video3d_zoo.inference.profile import count_params
    from video3d_zoo.weights.loading import convert_source, load_converted, save_pretrained

    digest = sha256_file(original)
    up = entry.upstream
    if verify_upstream and up is not None:
        if up.sha256 and digest != up.sha256:
            raise ValueError(f"{original}: sha256 {digest}, the manifest expects {up.sha256}")
        if up.sha256_prefix and not digest.startswith(up.sha256_prefix):
            raise ValueError(f"{original}: sha256 {digest} does not start with {up.sha256_prefix} "
                             "(the file name's hash suffix)")
    converted = convert_source(original)
    want = entry.to_config()
    problems = disagreements(converted, entry)  # the same confirmation `video3d-zoo import` makes
    if problems:
        raise ValueError(f"{original.name} converts to something else than {entry.name}: " + "; ".join(problems))
    converted.config = want.replace(source=f"{up.release}:{original.name}" if up else original.name)
    model = load_converted(converted)  # strict: every tensor present, nothing left over, shapes exact
    params = count_params(model)
    if entry.params is not None and params != entry.params:
        raise ValueError(f"{entry.name}: the converted model has {params} parameters, the manifest says {entry.params}")
    folder = out_dir / entry.name
    save_pretrained(model, folder, config=converted.config)
    return {"folder": folder, "original_sha256": digest}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("originals", type=Path, help="folder holding the downloaded original checkpoints")
    parser.add_argument("-o", "--output", type=Path, required=True, help="folder for the converted folders")
    parser.add_argument("--org", help="Hub organisation or user (required unless --dry-run)")
    parser.add_argument("--repo-template", default="{org}/{model}.{tag}",
                        help="repository id per entry (default: %(default)s)")
    parser.add_argument("--only", default="*",
                        help="shell patterns on model.tag, separated by commas (default: all entries)")
    parser.add_argument("--manifest", type=Path, default=ROOT / "weights_manifest.json")
    parser.add_argument("--dry-run", action="store_true", help="convert and write model cards, upload nothing")
    parser.add_argument("--force", action="store_true", help="also redo entries that are already published")
    parser.add_argument("--in-place", action="store_true",
                        help="write the updated manifest over --manifest")
    parser.add_argument("--no-verify-upstream", action="store_true",
                        help="do not check the originals against the manifest's upstream checksums")
    parser.add_argument("--private", action="store_true")
    args = parser.parse_args(argv)
    if not args.dry_run and not args.org:
        parser.error("--org is required unless --dry-run")

    sys.path.insert(0, str(ROOT))
    from video3d_zoo.weights.manifest import dumps, load_manifest, parse_manifest
    from video3d_zoo.weights.publish import publish_folder

    manifest = load_manifest(args.manifest)
    args.output.mkdir(parents=True, exist_ok=True)
    patterns = args.only.split(",")
    selected = [e for e in manifest.entries if any(fnmatch.fnmatchcase(e.name, p) for p in patterns)]
    if not selected:
        print(f"no entry matches {args.only!r}", file=sys.stderr)
        return 1
    updated = {e.name: e.to_dict() for e in manifest.entries}
    failures, done, missing = [], [], []
    with open(args.output / "entries.jsonl", "a", encoding="utf-8") as log:
        for entry in selected:
            if entry.published and not args.force:
                print(f"skip {entry.name}: already published ({entry.hub.repo_id}@{entry.hub.revision[:10]})")
                continue
            up = entry.upstream
            names = [up.file, *up.alternate_files] if up else []
            original = find_original(args.originals, names) if names else None
            if original is None:
                missing.append(entry.name)
                print(f"missing {entry.name}: none of {names or ['(no upstream recorded)']} under {args.originals}"
                      + (f"; download from {up.url}" if up and up.url else ""), file=sys.stderr)
                continue
            start = time.time()
            try:
                result = convert_entry(entry, original, args.output, verify_upstream=not args.no_verify_upstream)
                repo_id = args.repo_template.format(org=args.org or "DRY-RUN", model=entry.model, tag=entry.tag)
                finished = publish_folder(result["folder"], repo_id, tag=entry.tag, dry_run=args.dry_run,
                                          manifest=manifest, private=args.private,
                                          card_dir=result["folder"] if args.dry_run else None)
            except Exception as exc:  # report and go on with the next entry
                failures.append(entry.name)
                print(f"FAILED {entry.name}: {exc.__class__.__name__}: {exc}", file=sys.stderr)
                continue
            digest = result["original_sha256"]
            if up is not None and up.sha256 is None and digest.startswith(up.sha256_prefix or ""):
                finished["upstream"]["sha256"] = digest  # learnt: the checksum of the file we converted
            log.write(json.dumps(finished) + "\n")
            log.flush()
            if not args.dry_run:
                updated[entry.name] = finished
            done.append(entry.name)
            print(f"ok {entry.name}: {finished['hub']['repo_id']} revision {finished['hub']['revision']} "
                  f"sha256 {finished['hub']['sha256'][:12]}... ({time.time() - start:.1f} s)")

    if done and not args.dry_run:
        data = manifest.to_dict()
        data["entries"] = [updated[e.name] for e in manifest.entries]
        parse_manifest(data, path="updated manifest")  # never write an invalid manifest
        target = args.manifest if args.in_place else args.output / "weights_manifest.json"
        target.write_text(dumps(data), encoding="utf-8")
        print(f"wrote {target}" + ("" if args.in_place else f"; review it and copy it to {args.manifest}"))
    print(f"{len(done)} converted{' (dry run)' if args.dry_run else ' and published'}, {len(missing)} missing, "
          f"{len(failures)} failed" + (f": {failures}" if failures else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
