"""Command lines from frozen config dataclasses: defaults < --config FILE.toml < --key value.

Every dataclass field becomes ``--field-name`` (underscores as dashes), with its default and
the ``help`` in the field's metadata shown by ``--help``. Tuples are given comma-separated
(``--train-splits 1,2,3``); booleans as true/false. A TOML file holds the same keys (with
underscores), at top level.

Also the conventions every stage's ``main`` shares:

* ``clean_errors``: the errors a user can cause (another run holding the folder's lock, a
  missing or malformed checkpoint, store or data set) end the command with ``<stage>: error:
  <message>`` on stderr and exit status 1, without a traceback. Bugs still show theirs.
* ``--strict`` (``add_strict_option``) and ``report_skipped``: stages that read audio skip the
  files they cannot use and list them (how many, the first ``SHOW_SKIPPED`` with their
  reasons, and where the full list is). Without --strict the command exits 0; with it, it exits
  ``STRICT_EXIT`` (3) when anything was skipped. Either way the outputs are written in full:
  --strict is a check on what the run produced, so running it again on an up-to-date output
  reports the same skipped files and the same status.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
import tomllib
import typing
from pathlib import Path

STRICT_EXIT = 3     # exit status of a --strict run that skipped inputs
SHOW_SKIPPED = 10   # skipped inputs listed in a summary; the rest are counted


def _parse_bool(text: str) -> bool:
    low = str(text).lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _converter(tp):
    """A function turning a command-line string (or TOML value) into a value of type ``tp``."""
    origin = typing.get_origin(tp)
    if origin is tuple:
        inner = _converter(typing.get_args(tp)[0])
        return lambda v: tuple(inner(x) for x in (v.split(",") if isinstance(v, str) else v)
                               if str(x).strip() != "")
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        inner = _converter(args[0])
        return lambda v: None if v in (None, "", "none", "None") else inner(v)
    if tp is bool:
        return lambda v: v if isinstance(v, bool) else _parse_bool(v)
    return tp


def _fields(cls):
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls)]


def add_config_args(parser: argparse.ArgumentParser, cls) -> None:
    """Add ``--config`` and one option per field of the dataclass ``cls``."""
    parser.add_argument("--config", type=Path, default=None,
                        help="TOML file with option values (command-line options override it)")
    group = parser.add_argument_group(f"{cls.__name__} options")
    for f, tp in _fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        group.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name,
                           default=argparse.SUPPRESS,
                           metavar=f.name.upper(), type=str,
                           help=f"{f.metadata.get('help', '')} (default: {shown})")


def config_from_args(cls, args: argparse.Namespace):
    """The dataclass ``cls`` resolved from defaults, ``args.config`` (TOML) and explicit options."""
    values: dict = {}
    if getattr(args, "config", None):
        with open(args.config, "rb") as fh:
            toml = tomllib.load(fh)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(toml) - names)
        if unknown:
            raise SystemExit(f"{args.config}: unknown option(s) {unknown} for {cls.__name__}")
        values.update(toml)
    for f, _ in _fields(cls):
        given = getattr(args, f.name, None)
        if given is not None:
            values[f.name] = given
    typed = {}
    for f, tp in _fields(cls):
        if f.name in values:
            try:
                typed[f.name] = _converter(tp)(values[f.name])
            except (TypeError, ValueError, argparse.ArgumentTypeError) as e:
                raise SystemExit(f"--{f.name.replace('_', '-')}: {e}") from e
    return cls(**typed)


def add_parallel_options(parser: argparse.ArgumentParser) -> None:
    """--jobs, --threads and --scheduler: where an embedding stage's shards run (bow.io.sharded)."""
    parser.add_argument("--jobs", type=int, default=1, help="local worker processes")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per worker")
    parser.add_argument("--scheduler", default=None, help="Dask scheduler address "
                        "(tcp://host:8786) or local:N for a local cluster of N workers")


def apply_threads(args: argparse.Namespace) -> None:
    """--threads for a run in this process (workers set their own, see bow.io.sharded)."""
    if args.threads and args.jobs == 1 and not args.scheduler:
        import torch
        torch.set_num_threads(args.threads)


def common_parser(description: str, data_required: bool = True,
                  data_help: str = "dataset folder: FSD50K release layout or audio/ + labels.csv"
                  ) -> argparse.ArgumentParser:
    """A parser with the options every stage takes: --data, --artifacts, --device.

    Stages that read only stores (heads, evaluation) pass ``data_required=False``."""
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", type=Path, required=data_required, help=data_help)
    p.add_argument("--artifacts", type=Path, default=Path("artifacts"),
                   help="where stage outputs are written")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    return p


def add_strict_option(parser: argparse.ArgumentParser) -> None:
    """``--strict``: exit with status 3 when any input was skipped (outputs are still written)."""
    parser.add_argument("--strict", action="store_true",
                        help=f"exit with status {STRICT_EXIT} when any input file was skipped "
                             "(unreadable audio, labels outside the vocabulary...); the outputs "
                             "are written all the same")


def _short(fname: str, reason: str) -> str:
    """A reason without the leading '<path>: ' that repeats the file name."""
    head, sep, rest = str(reason).partition(": ")
    named = head.endswith(str(fname)) or Path(head).stem == str(fname)  # FSD50K: 123 -> 123.wav
    return rest if sep and named else str(reason)


def report_skipped(stage: str, skipped, where: str, strict: bool = False,
                   limit: int = SHOW_SKIPPED, file=None) -> None:
    """Print the skipped inputs [(fname, reason)] (the first ``limit``, and ``where`` the full
    list is); under ``strict``, exit with STRICT_EXIT when there are any."""
    file = file or sys.stdout
    skipped = list(skipped)
    if not skipped:
        print(f"{stage}: no input skipped", file=file)
        return
    print(f"{stage}: {len(skipped)} input(s) skipped (the full list: {where}):", file=file)
    for fname, reason in skipped[:limit]:
        print(f"  {fname}: {_short(fname, reason)}", file=file)
    if len(skipped) > limit:
        print(f"  ... and {len(skipped) - limit} more", file=file)
    if strict:
        print(f"{stage}: --strict: {len(skipped)} input(s) skipped, exit status {STRICT_EXIT} "
              "(the outputs are complete)", file=sys.stderr)
        sys.stdout.flush()
        raise SystemExit(STRICT_EXIT)


def _user_errors() -> tuple[type[BaseException], ...]:
    """The exception types that describe bad input or state, not bugs (see module docstring)."""
    from bow.audio.load import AudioError
    from bow.data.datasets import DatasetError
    from bow.io.stage import ArtifactError, LockedError
    from bow.io.store import StoreError
    found = [AudioError, DatasetError, ArtifactError, LockedError, StoreError]
    for module, name in (("bow.bagofwords.codebook", "CodebookError"), ("bow.kwmlp.model", "CheckpointError"),
                         ("bow.io.featureset", "FeatureSetError"), ("bow.bagofwords.bundle", "BundleError"),
                         ("bow.runtime", "PrecisionError")):
        if module in sys.modules:  # only those the stage imported can be raised
            found.append(getattr(sys.modules[module], name))
    return tuple(found)


@contextlib.contextmanager
def clean_errors(stage: str):
    """Turn the errors a user can cause into ``<stage>: error: <message>`` and exit status 1."""
    try:
        yield
    except Exception as e:
        if not isinstance(e, _user_errors()):
            raise
        print(f"{stage}: error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
