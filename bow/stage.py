"""Stage bookkeeping: fingerprints, atomic writes, skip-when-unchanged, and a directory lock.

A stage's fingerprint is the SHA-256 of its resolved config, the code version and its inputs'
fingerprints (canonical JSON). It is written to ``fingerprint.json`` beside the outputs only
after every output is complete, so a stage killed half-way is redone, and a stage whose
fingerprint is unchanged is skipped.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
from pathlib import Path

from bow import __version__


class LockedError(RuntimeError):
    """Another process holds the lock on an artifacts folder."""


def to_jsonable(obj):
    """Dataclasses, paths and tuples -> plain JSON types."""
    if dataclasses.is_dataclass(obj):
        return {k: to_jsonable(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def digest(obj) -> str:
    """SHA-256 hex digest of ``obj`` as canonical JSON."""
    text = json.dumps(to_jsonable(obj), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def file_digest(path: str | Path, block: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while data := f.read(block):
            h.update(data)
    return h.hexdigest()


def stage_fingerprint(config, inputs: dict) -> str:
    """Fingerprint of a stage run: its config, the code version and its inputs' fingerprints."""
    return digest({"config": config, "code_version": __version__, "inputs": inputs})


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: str | Path, obj) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(to_jsonable(obj), indent=2, sort_keys=True) + "\n")


def read_fingerprint(out_dir: str | Path) -> str | None:
    """The fingerprint a completed stage left in ``out_dir``, or None."""
    try:
        return json.loads((Path(out_dir) / "fingerprint.json").read_text())["fingerprint"]
    except (OSError, ValueError, KeyError):
        return None


def is_done(out_dir: str | Path, fingerprint: str) -> bool:
    """True when ``out_dir`` holds a completed run with this fingerprint."""
    return read_fingerprint(out_dir) == fingerprint


def mark_done(out_dir: str | Path, fingerprint: str, config, inputs: dict) -> None:
    """Record a completed stage: its resolved config, then its fingerprint (last)."""
    out_dir = Path(out_dir)
    write_json(out_dir / "config.json", config)
    write_json(out_dir / "fingerprint.json", {"fingerprint": fingerprint, "inputs": inputs,
                                              "code_version": __version__})


def clear_done(out_dir: str | Path) -> None:
    """Forget a completed run (before redoing a stage whose fingerprint changed)."""
    (Path(out_dir) / "fingerprint.json").unlink(missing_ok=True)


@contextlib.contextmanager
def locked(directory: str | Path, what: str = "stage"):
    """Hold an exclusive lock on ``directory`` (a ``.lock`` file in it); fail fast if taken."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    f = open(directory / ".lock", "a+")
    try:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockedError(
                f"{directory}: another {what} is running on this folder (lock held on "
                f"{directory / '.lock'}); wait for it or use another --artifacts folder") from None
        yield
    finally:
        f.close()
