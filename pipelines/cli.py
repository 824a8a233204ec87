"""Command lines from frozen config dataclasses, and the one skeleton every stage's ``main`` uses.

Options: defaults < ``--config FILE.toml`` < ``--key value``. Every dataclass field becomes
``--field-name`` (underscores as dashes), with its default and the help in the field's metadata
shown by ``--help`` (bow.config.option). Tuples are given comma-separated (``--train-splits
1,2,3``); booleans as true/false. A TOML file holds the same keys (with underscores), at top
level. Every stage also takes ``--data``, ``--artifacts``, ``--device`` and ``--no-progress``.

``stage_main`` is the skeleton of every stage's ``main``: parse the options, resolve the config
(an invalid value ends like any argparse error: usage, message, exit status 2), run the stage,
print its summary, list the skipped inputs, exit. Exit statuses, decided here only:

* 0: done (or up to date);
* 1: an error a user can cause (``USER_ERRORS``: another run holding the folder's lock, a
  missing or damaged checkpoint, store, bundle or data set, inputs a stage cannot use, a device
  that is not there, the HEAR evaluation kit missing or failing, the opensmile extra missing):
  ``<stage>: error: <message>`` on stderr, no traceback. Bugs still show theirs;
* 2: a bad option or configuration file;
* 3 (``STRICT_EXIT``), with ``--strict``: some input was skipped (unreadable audio, labels
  outside the vocabulary...). The outputs are written in full either way: --strict is a check
  on what the run produced, so running it again on an up-to-date output reports the same
  skipped files and the same status.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tomllib
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path

from bow.audio.load import AudioError
from bow.bagofwords.bundle import BundleError
from bow.bagofwords.codebook import CodebookError
from bow.config import ConfigError
from bow.data.datasets import DatasetError
from bow.environment import DependencyError
from bow.hear.kit import KitError
from bow.io.featureset import FeatureSetError
from bow.io.stage import ArtifactError, InputError, LockedError
from bow.io.store import StoreError
from bow.runtime import DeviceError, PrecisionError

STRICT_EXIT = 3     # exit status of a --strict run that skipped inputs
SHOW_SKIPPED = 10   # skipped inputs listed in a summary; the rest are counted
USER_ERRORS = (AudioError, DatasetError, ArtifactError, LockedError, InputError, StoreError,
               FeatureSetError, CodebookError, BundleError, PrecisionError, DeviceError,
               KitError, DependencyError)   # DependencyError: also openSMILE missing


def _parse_bool(text: str) -> bool:
    low = str(text).lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _converter(tp):
    """A function turning a command-line string (or TOML value) into a value of type ``tp``."""
    origin = typing.get_origin(tp)
    if origin is tuple:
        inner = _converter(typing.get_args(tp)[0])
        return lambda v: tuple(inner(x) for x in (v.split(",") if isinstance(v, str) else v)
                               if str(x).strip() != "")
    if origin in (typing.Union, types.UnionType):
        inner = _converter([a for a in typing.get_args(tp) if a is not type(None)][0])
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
    for f, _ in _fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        group.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name,
                           default=argparse.SUPPRESS, metavar=f.name.upper(), type=str,
                           help=f"{f.metadata.get('help', '')} (default: {shown})")


def read_toml(path: Path) -> dict:
    """The tables of a TOML file; ConfigError naming the file when it cannot be read."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the configuration file ({e})") from None


def resolve(cls, values: dict, where: str = ""):
    """The dataclass ``cls`` from option values (strings or TOML values); ConfigError naming the
    option (``where``, e.g. a TOML table, prefixes the message)."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"{where}unknown option(s) {unknown} for {cls.__name__}")
    typed = {}
    for f, tp in _fields(cls):
        if f.name in values:
            try:
                typed[f.name] = _converter(tp)(values[f.name])
            except (TypeError, ValueError) as e:
                raise ConfigError(f"{where}--{f.name.replace('_', '-')}: {e}") from None
    try:
        return cls(**typed)
    except ValueError as e:
        raise ConfigError(f"{where}{e}") from None


def config_from_args(cls, args: argparse.Namespace):
    """The dataclass ``cls`` resolved from defaults, ``args.config`` (TOML) and explicit options."""
    values = read_toml(args.config) if getattr(args, "config", None) else {}
    where = f"{args.config}: " if values else ""
    for f in dataclasses.fields(cls):
        if getattr(args, f.name, None) is not None:
            values[f.name] = getattr(args, f.name)
    return resolve(cls, values, where)


def parallel_options(parser: argparse.ArgumentParser) -> None:
    """--jobs, --threads and --scheduler: where an embedding stage's shards run (bow.io.sharded)."""
    parser.add_argument("--jobs", type=int, default=1, help="local worker processes")
    parser.add_argument("--threads", type=int, default=None, help="accepted so that older "
                        "commands run; it does not change the embedding: every worker computes "
                        "on one thread, so that stores do not depend on threads (use --jobs or "
                        "--scheduler for more cores)")
    parser.add_argument("--scheduler", default=None, help="Dask scheduler address "
                        "(tcp://host:8786) or local:N for a local cluster of N workers")


def threads_option(parser: argparse.ArgumentParser) -> None:
    """--threads for a stage that computes in its own process."""
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (1 is fastest on a busy machine)")


def apply_threads(args: argparse.Namespace) -> None:
    """--threads for work in this process (bow.io.sharded workers set their own)."""
    if getattr(args, "threads", None) and getattr(args, "jobs", 1) == 1 \
            and not getattr(args, "scheduler", None):
        import torch
        torch.set_num_threads(args.threads)


def common_parser(description: str, data_required: bool = True,
                  data_help: str = "dataset folder: FSD50K release layout, audio/ + labels.csv, "
                                   "or Speech Commands") -> argparse.ArgumentParser:
    """A parser with the options every stage takes: --data, --artifacts, --device,
    --no-progress. Stages that read only stores pass ``data_required=False``."""
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", type=Path, required=data_required, help=data_help)
    p.add_argument("--artifacts", type=Path, default=Path("artifacts"),
                   help="where stage outputs are written")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars (logs get a short line now and then instead)")
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
                   limit: int = SHOW_SKIPPED, file=None) -> int:
    """Print the skipped inputs [(fname, reason)] (the first ``limit``, and ``where`` the full
    list is); return the exit status: STRICT_EXIT under ``strict`` when there are any, else 0."""
    file = file or sys.stdout
    skipped = list(skipped)
    if not skipped:
        print(f"{stage}: no input skipped", file=file)
        return 0
    print(f"{stage}: {len(skipped)} input(s) skipped (the full list: {where}):", file=file)
    for fname, reason in skipped[:limit]:
        print(f"  {fname}: {_short(fname, reason)}", file=file)
    if len(skipped) > limit:
        print(f"  ... and {len(skipped) - limit} more", file=file)
    if not strict:
        return 0
    file.flush()
    print(f"{stage}: --strict: {len(skipped)} input(s) skipped, exit status {STRICT_EXIT} "
          "(the outputs are complete)", file=sys.stderr)
    return STRICT_EXIT


def say_if_unchanged(before, after, what: Path, inputs: str = "config and inputs") -> None:
    """Print that ``what`` was up to date when its fingerprint did not change."""
    if before is not None and after == before:
        print(f"{what}: up to date (same {inputs}), skipped")


def fail(stage: str, error: BaseException) -> typing.NoReturn:
    """End the command with ``<stage>: error: <message>`` and exit status 1."""
    sys.stdout.flush()
    print(f"{stage}: error: {error}", file=sys.stderr)
    raise SystemExit(1)


Skipped = tuple[list, str]   # [(fname, reason)] and where the full list is


def guarded(name: str, parser: argparse.ArgumentParser, work: Callable[[], object]):
    """``work()`` under the exit statuses of the module docstring: a ConfigError ends like an
    argparse error (2), a user error with ``<name>: error: <message>`` (1)."""
    try:
        return work()
    except ConfigError as e:
        parser.error(str(e))
    except USER_ERRORS as e:
        fail(name, e)


def stage_main(argv: Sequence[str] | None, name: str, description: str, config_cls,
               work: Callable[[argparse.Namespace, object], Skipped | None], *,
               options: Sequence[Callable[[argparse.ArgumentParser], None]] = (),
               strict: bool = True, data_required: bool = True,
               data_help: str | None = None) -> None:
    """Parse, resolve ``config_cls``, run ``work(args, config)`` (which runs the stage, prints its
    summary and returns the skipped inputs and where they are listed, or None), and exit with
    the status of the module docstring."""
    parser = common_parser(description, data_required,
                           **({"data_help": data_help} if data_help else {}))
    for add in options:
        add(parser)
    if strict:
        add_strict_option(parser)
    add_config_args(parser, config_cls)
    args = parser.parse_args(argv)
    config = guarded(name, parser, lambda: config_from_args(config_cls, args))
    apply_threads(args)
    skipped = guarded(name, parser, lambda: work(args, config))
    status = report_skipped(name, *skipped, strict=strict and args.strict) if skipped else 0
    if status:
        raise SystemExit(status)
