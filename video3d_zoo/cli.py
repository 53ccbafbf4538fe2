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


@command("bench")
def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import format_rows, run_benchmark, write_csv

    rows = run_benchmark(args.models, batch_size=args.batch_size, frames=args.frames, size=args.size,
                         repeats=args.repeats, variants=args.variants, device=args.device,
                         compile=not args.no_compile)
    print(format_rows(rows))
    if args.csv:
        write_csv(rows, args.csv)
        print(f"wrote {args.csv}")
    return 0


@command("export")
def _cmd_export(args: argparse.Namespace) -> int:
    from .export import export_onnx

    report = export_onnx(_load_model_arg(args.model), args.output, frames=args.frames, size=args.size,
                         opset=args.opset, check=not args.no_check)
    checked = f", max |onnxruntime - torch| = {report.max_abs_diff:.2e}" if report.max_abs_diff is not None else ""
    print(f"wrote {report.path} (dynamic axes: batch, time){checked}")
    return 0


def _load_model_arg(ref: str):
    """NAME[.TAG] of a registered model (pretrained weights if a tag is given) or a checkpoint path."""
    from pathlib import Path

    from .api import create_model
    from .weights import from_pretrained

    if Path(ref).exists():
        return from_pretrained(ref)
    return create_model(ref, pretrained=True if "." in ref else None)


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

    p = sub.add_parser("bench", help="inference speed of each fast-path variant against eager fp32")
    p.add_argument("models", nargs="+")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--variants", nargs="+", default=None,
                   help="subset of eager_fp32 fast_fp32 fast_bf16 compiled_fp32 compiled_bf16")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants")
    p.add_argument("--device", default=None)
    p.add_argument("--csv", default=None, help="also write the rows to this CSV file")

    p = sub.add_parser("export", help="export a model to ONNX (dynamic batch and time axes)")
    p.add_argument("model", help="NAME[.TAG] or a checkpoint path")
    p.add_argument("--format", choices=["onnx"], default="onnx")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--frames", type=int, default=None)
    p.add_argument("--size", type=int, default=None)
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime comparison")
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
