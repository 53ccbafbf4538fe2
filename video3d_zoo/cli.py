"""``video3d-zoo`` command line.  Thin: each command parses arguments and calls one library function."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Dict, List, Optional

from .errors import Video3DZooError

Handler = Callable[[argparse.Namespace], int]
_COMMANDS: Dict[str, Handler] = {}


def command(name: str) -> Callable[[Handler], Handler]:
    def decorate(fn: Handler) -> Handler:
        _COMMANDS[name] = fn
        return fn
    return decorate


@command("list")
def _cmd_list(args: argparse.Namespace) -> int:
    from .registry import list_models

    for name in list_models(args.pattern, include_aliases=args.aliases):
        print(name)
    return 0


@command("info")
def _cmd_info(args: argparse.Namespace) -> int:
    from .profile import profile

    result = profile(args.name, frames=args.frames, size=args.size, init_weights=False)
    info = {"model": args.name, **result.to_dict()}
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(f"{args.name}: {result.params_millions:.3f} M parameters, {result.gmacs:.2f} GMACs per "
              f"{args.frames}x{args.size}x{args.size} clip (fvcore, 1 MAC = 1 multiply-add)")
        if result.uncounted_ops:
            ops = ", ".join(f"{k} x{v}" for k, v in sorted(result.uncounted_ops.items()))
            print(f"not counted (no MACs or no fvcore formula): {ops}")
    return 0


@command("convert")
def _cmd_convert(args: argparse.Namespace) -> int:
    from .weights import convert_to_folder

    out = convert_to_folder(args.src, args.output)
    config = json.loads((out / "config.json").read_text())
    print(f"wrote {out / 'model.safetensors'} and {out / 'config.json'}: {config['architecture']} "
          f"{config['arch_kwargs']}, {config['num_classes']} classes, input {config['input_spec']['name']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="video3d-zoo", description="Spatiotemporal 3D CNN model zoo.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list registered models")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style pattern, e.g. 'resnext*'")
    p.add_argument("--aliases", action="store_true", help="include torch.hub-style aliases")

    p = sub.add_parser("info", help="parameters and GMACs of a model (fvcore)")
    p.add_argument("name")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("convert", help="original / torchvision checkpoint -> model.safetensors + config.json")
    p.add_argument("src", help=".pth file, safetensors file or zoo folder")
    p.add_argument("-o", "--output", required=True, help="output folder")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except Video3DZooError as exc:
        print(f"video3d-zoo {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
