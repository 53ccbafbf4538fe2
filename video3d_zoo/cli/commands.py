"""``video3d-zoo`` command line.  Thin: each command parses arguments and calls one library function.

The command line owns argument parsing: library functions take typed arguments.  The
training-side commands (``train``, ``eval``, ``make-synthetic``) live in :mod:`.cli_train`;
:func:`main` is every command's error boundary.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Dict, List, Optional

from .argtypes import COMMAND_EXAMPLES, MODEL_REF_HELP, add_shared, finish_subparsers, int_in
from .. import limits
from .train import TRAINING_COMMANDS
from ..errors import ConfigError
from .boundary import guarded
from ..version import __version__

Handler = Callable[[argparse.Namespace], int]
_COMMANDS: Dict[str, Handler] = {name: handler for name, (_add, handler) in TRAINING_COMMANDS.items()}
# Commands whose user errors print as one line (a long config message joined), as ``train`` always has.
_ONE_LINE_ERRORS = {"train"}


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose argument errors are one line, as every other user error (no usage block:
    ``--help`` shows it)."""

    def __init__(self, *args, one_line_errors: bool = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.one_line_errors = one_line_errors

    def error(self, message: str):
        if self.one_line_errors:
            self.exit(2, f"{self.prog}: error: {message}\n")
        super().error(message)


def command(name: str) -> Callable[[Handler], Handler]:
    def decorate(fn: Handler) -> Handler:
        _COMMANDS[name] = fn
        return fn
    return decorate


@command("list")
def _cmd_list(args: argparse.Namespace) -> int:
    from ..models.registry import list_models
    from ..weights.listing import format_table, pretrained_rows

    rows = pretrained_rows(args.pattern) if args.pretrained else list_models(args.pattern, include_aliases=args.aliases)
    if not rows and args.pattern:  # a pattern that matches nothing is a typo, not an empty zoo
        _no_match(args.pattern, args.pretrained)
    print(format_table(rows) if args.pretrained else "\n".join(rows))
    return 0


def _no_match(pattern: str, pretrained: bool) -> None:
    what = "pretrained weights match" if pretrained else "registered model matches"
    raise ConfigError(f"no {what} {pattern!r} (video3d-zoo list{' --pretrained' * pretrained} lists them all)")


@command("info")
def _cmd_info(args: argparse.Namespace) -> int:
    from ..models.registry import list_models

    names = [m for ref in args.names for m in (list_models(ref) if set(ref) & set("*?[") else [ref])]
    if not names:
        raise ConfigError(f"no registered model matches {' '.join(args.names)} (see video3d-zoo list)")
    for name in names:
        _print_info(name, args, one_json=len(names) == 1)
    return 0


def _clip_shape(name: str, frames: Optional[int], size: Optional[int], batch: int = 1):
    """``(frames, size)`` given, or the input spec of the weights ``name`` (``model.tag``) or of the registered
    model ``name``; refused when a batch of such clips would not fit in memory."""
    from ..models.config import input_preset
    from ..models.registry import get_model_spec

    spec = (_weights_of(name).config.input_spec if "." in name
            else input_preset(get_model_spec(name).input_preset))
    frames, size = frames or spec.frames, size or spec.crop_size
    limits.check_clip_memory(batch, frames, size)
    return frames, size


def _weights_of(name: str):
    from ..weights.catalog import get_weights

    return get_weights(name)


def _print_info(name: str, args: argparse.Namespace, one_json: bool) -> None:
    from ..inference.profile import profile

    frames, size = _clip_shape(name, args.frames, args.size)
    if "." in name:  # model.tag: the architecture and head the weights load with (no weights read)
        config = _weights_of(name).config
        result = profile(config.architecture, frames=frames, size=size, init_weights=False,
                         num_classes=config.num_classes, **dict(config.arch_kwargs))
    else:
        result = profile(name, frames=frames, size=size, init_weights=False)
    if args.json:  # one model: an indented object; several: one object per line
        print(json.dumps({"model": name, **result.to_dict()}, indent=2 if one_json else None), flush=True)
        return
    print(f"{name}: {result.params_millions:.3f} M parameters, {result.gmacs:.2f} GMACs per "
          f"{frames}x{size}x{size} clip (fvcore, 1 MAC = 1 multiply-add)")
    if result.uncounted_ops:
        ops = ", ".join(f"{k} x{v}" for k, v in sorted(result.uncounted_ops.items()))
        print(f"not counted (no MACs or no fvcore formula): {ops}")


@command("convert")
def _cmd_convert(args: argparse.Namespace) -> int:
    from ..weights.loading import convert_to_folder

    out = convert_to_folder(args.src, args.output)
    config = json.loads((out / "config.json").read_text())
    print(f"wrote {out / 'model.safetensors'} and {out / 'config.json'}: {config['architecture']} "
          f"{config['arch_kwargs']}, {config['num_classes']} classes, input {config['input_spec']['name']}")
    return 0


@command("bench")
def _cmd_bench(args: argparse.Namespace) -> int:
    from ..inference.bench import format_rows, run_benchmark, write_csv

    for name in args.models:  # each model's clips must fit before any runs
        _clip_shape(name, args.frames, args.size, args.batch_size)
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
    from ..inference.export import export_onnx

    from ..api import load_model

    model = load_model(args.model, pretrained=not args.random_weights)
    spec = model.config.input_spec
    limits.check_clip_memory(1, args.frames or spec.frames, args.size or spec.crop_size)
    report = export_onnx(model, args.output, frames=args.frames, size=args.size, opset=args.opset,
                         check=not args.no_check)
    checked = f", max |onnxruntime - torch| = {report.max_abs_diff:.2e}" if report.max_abs_diff is not None else ""
    print(f"wrote {report.path} (dynamic axes: batch, time){checked}")
    return 0


def _model_from_args(args: argparse.Namespace):
    """``--model REF`` (any reference :func:`~video3d_zoo.api.load_model` reads) or ``--weights PATH``,
    on the requested device, optionally on the fast path."""
    from ..devices import resolve_device
    from ..api import load_model
    from ..weights.resolve import parse_model_ref

    if bool(args.model) == bool(args.weights):
        raise ConfigError("give exactly one of --model NAME[.TAG] | PATH | hf-hub:ORG/REPO, or --weights PATH")
    device = resolve_device(args.device)  # checked before anything is loaded
    if args.weights and parse_model_ref(args.weights).kind == "name":
        raise ConfigError(f"--weights {args.weights!r} names a registered model; --weights takes a checkpoint "
                          "path (use --model for names)")
    model = load_model(args.model or args.weights).to(device).eval()
    spec = model.config.input_spec  # the clips of one batch must fit before any is decoded
    limits.check_clip_memory(args.batch_size, args.clip_len or spec.frames, spec.crop_size)
    if args.precision != "fp32" or args.fast or args.compile:
        from ..inference.prepare import optimize_for_inference

        # The loaded model is this command's own: preparing it in place saves a copy (0.16 s for a resnet3d_50).
        model = optimize_for_inference(model, precision=args.precision, device=device, compile=args.compile,
                                       batch_size=getattr(args, "batch_size", None), copy_model=False)
    return model


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help=MODEL_REF_HELP)
    p.add_argument("--weights", help="checkpoint file or folder (zoo, 2017/2020 original, torchvision); "
                   "same as --model PATH")
    add_shared(p, "--device", "--precision", "--fast", "--compile")


def _add_clip_args(p: argparse.ArgumentParser) -> None:
    add_shared(p, "--clip-len", "--stride", "--last", "--fps", "--batch-size")


@command("extract")
def _cmd_extract(args: argparse.Namespace) -> int:
    from ..jobs.extract import run_extraction
    from ..jobs.extract_plan import check_inputs_exist

    model = _model_from_args(args)  # first, as every command: a bad model is reported whatever the videos
    check_inputs_exist(args.inputs)  # a typo is one line before the output folder is made
    summary = run_extraction(model, args.inputs, args.output, layer=args.layer, clip_len=args.clip_len,
                             stride=args.stride, last=args.last, fps=args.fps, batch_size=args.batch_size,
                             workers=args.workers, shard=args.shard, overwrite=args.overwrite,
                             progress=not args.quiet, strict=args.strict, overlap=args.overlap)
    print(summary.describe())
    if args.verbose:
        print(summary.describe_timing())
    return 0 if summary.ok else 1


@command("classify")
def _cmd_classify(args: argparse.Namespace) -> int:
    from ..jobs.classify import run_classify
    from ..jobs.extract_plan import check_inputs_exist
    from ..jobs.features import classify_video

    model = _model_from_args(args)  # first: a bad model reference is reported whatever the videos
    check_inputs_exist(args.inputs)  # as extract: a typo is one line, not a failure among the results

    def classify(video):
        return classify_video(model, video, topk=args.topk, clip_len=args.clip_len, stride=args.stride,
                              last=args.last, fps=args.fps, batch_size=args.batch_size)

    return run_classify(args.inputs, classify, args.json)


@command("demo")
def _cmd_demo(args: argparse.Namespace) -> int:
    from ..jobs.demo import run_demo

    report = run_demo(args.output, seed=args.seed, device=args.device)
    print(report.describe())
    return 0


@command("publish")
def _cmd_publish(args: argparse.Namespace) -> int:
    from ..weights.manifest import dumps
    from ..weights.publish import publish_folder

    sys.stdout.write(dumps(publish_folder(args.folder, args.repo_id, tag=args.tag, dry_run=args.dry_run,
                                          private=args.private, card_dir=args.card_dir)))
    return 0


@command("list-pretrained")
def _cmd_list_pretrained(args: argparse.Namespace) -> int:
    from ..weights.listing import format_table, pretrained_rows
    from ..weights.manifest import list_pretrained

    if args.pattern and not list_pretrained(args.pattern):
        _no_match(args.pattern, True)
    if args.names:
        print("\n".join(list_pretrained(args.pattern)))
        return 0
    if not (args.verbose or args.json):
        print(format_table(pretrained_rows(args.pattern)))
        return 0
    rows = list_pretrained(args.pattern, sources=True)
    if args.json:
        print(json.dumps([r.to_dict() for r in rows], indent=2))
        return 0
    width = max([len(r.name) + 10 for r in rows] + [20])
    print(f"{'model.tag':<{width}} {'now from':<13} where")
    for r in rows:
        name = r.name + (" (default)" if r.default else "")
        print(f"{name:<{width}} {r.available:<13} {r.describe()}")
    return 0


@command("import")
def _cmd_import(args: argparse.Namespace) -> int:
    from ..weights.importer import import_weights

    report = import_weights(args.paths)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.describe(cli=True))
    return 0 if report.ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="video3d-zoo", description="Spatiotemporal 3D CNN model zoo.")
    parser.add_argument("--version", action="version", version=f"video3d-zoo {__version__}",
                        help="print the package version and exit")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_list_parsers(sub)
    for add_parser, _handler in TRAINING_COMMANDS.values():
        add_parser(sub)
    _add_model_parsers(sub)
    _add_video_parsers(sub)
    _add_export_parser(sub)
    finish_subparsers(sub, COMMAND_EXAMPLES)
    return parser


def _add_list_parsers(sub) -> None:
    p = sub.add_parser("list", help="list registered models")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style pattern, e.g. 'resnext*'")
    p.add_argument("--aliases", action="store_true", help="include torch.hub-style aliases")
    p.add_argument("--pretrained", action="store_true", help="the table of pretrained weights (as list-pretrained)")

    p = sub.add_parser("demo", help="classify and extract features of fresh synthetic videos with the "
                       "embedded model (offline)")
    p.add_argument("-o", "--output", default=None, help="folder to keep the videos and features in (default: a temporary folder, removed at the end)")
    p.add_argument("--seed", type=int_in(0, limits.MAX_SEED), default=2026,
                   help="seed of the generated videos (not the training set's seed 0: videos the model never saw)")
    add_shared(p, "--device")


def _add_model_parsers(sub) -> None:
    p = sub.add_parser("list-pretrained", help="table of pretrained weights: model.tag, params, GMACs, frames, data "
                       "set, top-1, where the weights are")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style pattern on model.tag, e.g. 'resnet3d_50*'")
    p.add_argument("--names", action="store_true", help="only the model.tag names, one a line")
    p.add_argument("--verbose", "-v", action="store_true",
                   help="also say where each can come from now: embedded, installed (from which file), cached, "
                        "hub, or original only")
    p.add_argument("--json", action="store_true", help="the same as JSON")

    p = sub.add_parser("import", help="verify, convert and install original checkpoints (2017, 2020, torchvision) "
                       "so that their names load offline")
    p.add_argument("paths", nargs="+", help="original .pth files, or folders searched recursively")
    p.add_argument("--json", action="store_true", help="the report as JSON")

    p = sub.add_parser("info", help="parameters and GMACs of a model (fvcore)")
    p.add_argument("names", nargs="+", metavar="name",
                   help="registered model names, aliases or shell-style patterns, e.g. r3d_18 'resnext*'")
    add_shared(p, "--frames", "--size")
    p.add_argument("--json", action="store_true",
                   help="print the numbers as JSON: one object, or one per line for several models")

    p = sub.add_parser("convert", help="original / torchvision checkpoint -> model.safetensors + config.json")
    p.add_argument("src", help=".pth file, safetensors file or zoo folder")
    p.add_argument("-o", "--output", required=True, help="output folder")

    p = sub.add_parser("bench", help="inference speed of each fast-path variant against eager fp32")
    p.add_argument("models", nargs="+", help="registered model names (random weights)")
    add_shared(p, "--batch-size", "--frames", "--size")
    p.add_argument("--repeats", type=int_in(1, 1000), default=3,
                   help="timed repetitions per variant, 1 to 1000 (the median is reported)")
    p.add_argument("--variants", nargs="+", default=None,
                   help="subset of eager_fp32 fast_fp32 fast_bf16 compiled_fp32 compiled_bf16")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants")
    add_shared(p, "--device")
    p.add_argument("--csv", default=None, help="also write the rows to this CSV file")

    p = sub.add_parser("publish", help="model card + upload of a converted folder; prints the manifest entry",
                       description="Publish a converted folder to the Hugging Face Hub and produce its manifest "
                                   "entry.")
    p.add_argument("folder", help="converted folder (model.safetensors + config.json)")
    p.add_argument("--repo-id", required=True, help="Hub model repository, ORG/NAME")
    p.add_argument("--tag", help="manifest tag, e.g. k700_16f (default: the tag in config.json)")
    p.add_argument("--dry-run", action="store_true", help="upload nothing and change nothing on disk")
    p.add_argument("--card-dir", help="with --dry-run: write the README.md + config.json it would publish here")
    p.add_argument("--private", action="store_true", help="create the repository private")


def _add_video_parsers(sub) -> None:
    p = sub.add_parser("extract", help="clip features of videos, one .npz per video")
    p.add_argument("inputs", nargs="+", help="video files, folders (recursive) or text files listing paths")
    p.add_argument("-o", "--output", required=True, help="output folder")
    _add_model_args(p)
    _add_clip_args(p)
    p.add_argument("--layer", default="pooled", help="pooled (default), logits, or a stage name such as layer3")
    add_shared(p, "--workers")
    p.add_argument("--overlap", action=argparse.BooleanOptionalAction, default=None,
                   help="with --workers 0, decode in a background thread while the model runs "
                        "(default: on with 2 or more cores)")
    p.add_argument("--verbose", "-v", action="store_true",
                   help="also print where the time went: model, waiting for decoded clips, decoding, writing")
    p.add_argument("--shard", default=None, help="i/n: this process takes every n-th video from the i-th "
                   "(default under torchrun: RANK/WORLD_SIZE)")
    p.add_argument("--overwrite", action="store_true", help="redo videos whose .npz is already up to date")
    p.add_argument("--strict", action="store_true",
                   help="treat partial decodes and still images as failures (no file, exit status 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("classify", help="video-level prediction (softmax averaged over clips)")
    p.add_argument("inputs", nargs="+", metavar="video",
                   help="video files, folders (recursive) or text files listing paths, as for extract")
    _add_model_args(p)
    _add_clip_args(p)
    add_shared(p, "--topk")
    p.add_argument("--json", action="store_true",
                   help='one JSON object per video and line: {"video", "num_clips", "top": [{"label", "score"}], ...}')


def _add_export_parser(sub) -> None:
    p = sub.add_parser("export", help="export a model to ONNX (dynamic batch and time axes)")
    p.add_argument("model", help=MODEL_REF_HELP)
    p.add_argument("--random-weights", action="store_true",
                   help="export the architecture NAME with random weights instead of its pretrained weights")
    p.add_argument("--format", choices=["onnx"], default="onnx", help="export format")
    p.add_argument("-o", "--output", required=True, help="output file, e.g. model.onnx")
    add_shared(p, "--frames", "--size")
    p.add_argument("--opset", type=int_in(11, 30), default=17, help="ONNX opset version, 11 to 30")
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime comparison")


def main(argv: Optional[List[str]] = None) -> int:
    """Run one command inside the error boundary (:func:`~video3d_zoo.cli.boundary.guarded`): a user
    error prints one ``video3d-zoo CMD: error: ...`` line and returns 2; anything else is a bug (1)."""
    args = build_parser().parse_args(argv)
    return guarded(args.command, lambda: _COMMANDS[args.command](args),
                   one_line=args.command in _ONE_LINE_ERRORS)


def run() -> int:
    """The console entry point (``video3d-zoo``, ``python -m video3d_zoo``): :func:`main` with freed
    memory kept for reuse (:mod:`video3d_zoo.inference.memory`) and the garbage collector told to leave
    long-lived objects alone.

    ``import torch`` creates about 170,000 objects that live as long as the process.  Python's
    full collections walk all of them (four times in an extraction), and so do the collections
    of interpreter shutdown: 0.3-0.4 s of a 10 s ``extract`` run went to ``gc_collect_main``
    after the work was done (measured with perf).  ``gc.freeze()`` moves the objects alive now
    out of the collector's sight; they are freed with the process as before.  (Not in
    :func:`main`, which tests call many times in one process.)
    """
    import gc

    from ..inference.memory import reuse_freed_memory

    reuse_freed_memory()  # see video3d_zoo.inference.memory: 0.3-0.5 s of a 10 s extraction
    gc.freeze()  # the imports: torch and this package
    code = main()
    gc.freeze()  # what the command built (a model, its library): spare the shutdown collections
    return code


if __name__ == "__main__":
    sys.exit(run())
