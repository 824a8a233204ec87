"""Stage bookkeeping: fingerprints, atomic writes, skip-when-unchanged, safe loading, locks.

A stage's fingerprint is the SHA-256 of its resolved config, the code version and its inputs'
fingerprints (canonical JSON). It is written to ``fingerprint.json`` beside the outputs only
after every output is complete, so a stage killed half-way is redone, and a stage whose
fingerprint is unchanged is skipped.

Crash safety: every file is written under a temporary name beside its final one
(``.<name>.tmp-<pid>``), flushed to disk and renamed (``atomic_path``), so a process killed at
any moment (even by SIGKILL) leaves under a final name either nothing, the previous version or
the complete new one, never a part. A killed run may leave its temporary file behind; it is
never read, and the next run of the stage in that folder deletes it (``locked``).

Determinism: ``save_torch`` writes through a file object, because ``torch.save(obj, path)``
names the zip archive inside the file after the file name, which for a temporary name holds
the process id (with a file object it is always "archive"), and it pickles a ``canonical``
copy of the object, because pickle's memo depends on which equal strings are one object (a
training history resumed from a checkpoint would otherwise pickle differently from one built
in a single run). The same content then gives the same bytes.

Loading (``load_torch``, ``read_json``): checkpoints are read with
``torch.load(weights_only=True)`` (tensors, numbers, strings, lists and dicts only; no
pickled objects) and any failure (missing, truncated, random bytes, a pickle, bad JSON)
becomes ``ArtifactError`` naming the file and the problem.

Locks (``locked``): a stage holds an exclusive lock on the folder it writes and a shared lock
on each folder it reads, through ``flock`` on a ``.lock`` file in it. A second stage that
would write the same folder, or read a folder being written, fails at once with
``LockedError`` saying which process holds it; several readers may share a folder. The
kernel drops the lock when its process dies (SIGKILL included): no stale locks. ``flock`` is
not reliable on some network filesystems (older NFS): there, do not run two stages on the
same artifacts at once.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import sys
from pathlib import Path

from bow import __version__


class LockedError(RuntimeError):
    """Another process holds the lock on an artifacts folder."""


class InputError(ValueError):
    """Inputs a stage cannot work from: no clips in the splits asked for, an upstream stage not
    finished, too few readable clips...; the message says what is missing and what to run."""


class ArtifactError(ValueError):
    """A stage output (checkpoint, model, sidecar) that is missing, unreadable or of the wrong
    kind; the message names the file and the problem."""


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


TMP_MARK = ".tmp-"


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds.

    The file is flushed to disk before the rename and the folder after it, so even a power
    cut leaves the old or the new file, never a part of one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process
        return True
    return True


def remove_temporaries(directory: str | Path, name: str = "*") -> list[Path]:
    """Delete the temporary files (``.<name>.tmp-<pid>``) that killed runs left in ``directory``
    (files of ``name`` only, if given; never those of a live process)."""
    removed = []
    for p in Path(directory).glob(f".{name}{TMP_MARK}*"):
        pid = p.name.rsplit(TMP_MARK, 1)[-1]
        if p.is_file() and pid.isdigit() and not _alive(int(pid)):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def write_json(path: str | Path, obj) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(to_jsonable(obj), indent=2, sort_keys=True) + "\n")


def read_json(path: str | Path, what: str = "JSON file"):
    """The JSON content of ``path``; ArtifactError naming the file if missing or malformed."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{path}: no such file (the {what})") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ArtifactError(f"{path}: not a readable {what} ({e})") from None


def canonical(obj):
    """A copy of nested dicts, lists and tuples whose strings are interned (leaves as they are).

    Pickle memoises strings and containers by identity, so the same content can give other
    bytes depending on which equal strings happen to be one object (e.g. history entries built
    in this process vs. read back from a checkpoint). After this, equal strings are one object
    and no container is shared: the bytes depend on the content only."""
    if type(obj) is str:
        return sys.intern(obj)
    if isinstance(obj, dict):
        return type(obj)((canonical(k), canonical(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)) and type(obj) in (list, tuple):
        return type(obj)(canonical(v) for v in obj)
    return obj


def save_torch(obj, path: str | Path) -> None:
    """``torch.save(obj)`` to ``path`` atomically, the same bytes for the same content."""
    import torch
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:  # a file object: the archive is named "archive", not tmp
            torch.save(canonical(obj), f)


def load_torch(path: str | Path, what: str = "checkpoint", map_location="cpu"):
    """``torch.load(path, weights_only=True)``; ArtifactError naming the file on any failure.

    weights_only refuses anything but tensors and plain containers, so loading never runs
    pickled code."""
    import torch
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no such file (the {what})")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # RuntimeError, UnpicklingError, EOFError, OSError, ...
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ArtifactError(f"{path}: not a readable {what} (truncated, corrupt, or not "
                            f"written by this project: {detail})") from None


def read_fingerprint(out_dir: str | Path) -> str | None:
    """The fingerprint a completed stage left in ``out_dir``, or None."""
    try:
        return json.loads((Path(out_dir) / "fingerprint.json").read_text())["fingerprint"]
    except (OSError, ValueError, KeyError, TypeError):
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


def _holders(lock_file: Path) -> str:
    """Who holds flock locks on ``lock_file``, e.g. 'pid 12: python -m pipelines.embed ...'
    (from /proc/locks and /proc/<pid>/cmdline on Linux; '' where they cannot be read)."""
    try:
        inode = os.stat(lock_file).st_ino
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return ""
    found = []
    for line in lines:
        parts = line.split()
        if "->" in parts or len(parts) < 6 or parts[1] != "FLOCK":
            continue
        pid, ident = parts[4], parts[5]
        if ident.rsplit(":", 1)[-1] == str(inode) and pid.isdigit() and pid not in found:
            found.append(pid)
    described = []
    for pid in found:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            cmd = ""
        described.append(f"pid {pid}" + (f": {cmd}" if cmd else ""))
    return "; ".join(described)


@contextlib.contextmanager
def locked(directory: str | Path, what: str = "stage", shared: bool = False):
    """Hold a lock on ``directory`` (its ``.lock`` file) for the block; fail fast if taken.

    Exclusive (a stage writing the folder) by default; ``shared=True`` for a stage reading it:
    readers exclude writers, not each other. A shared lock on a folder that cannot hold a lock
    file (read-only) is skipped: nobody can write there either. The message of a LockedError
    names ``what`` (the stage asking) and the holders' pids and commands (Linux: from
    /proc/locks). The exclusive holder deletes the temporary files that killed runs left in
    the folder.
    """
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        f = open(directory / ".lock", "a+")
    except OSError:
        if not shared:
            raise
        f = None
    if f is None:
        yield
        return
    lock_file = directory / ".lock"
    try:
        try:
            fcntl.flock(f.fileno(), (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockedError(_locked_message(f, directory, lock_file, what, shared)) from None
        if not shared:
            remove_temporaries(directory)
        yield
    finally:
        f.close()


def _locked_message(f, directory: Path, lock_file: Path, what: str, shared: bool) -> str:
    who = _holders(lock_file)
    who = f" ({who})" if who else ""
    hint = f"wait for it to finish, or use another --artifacts folder (lock: {lock_file})"
    if shared:
        return (f"{directory}: another stage is writing this folder{who}, so {what} cannot "
                f"read it now; {hint}")
    try:  # only readers hold it when a shared lock can be had
        fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        return (f"{directory}: another stage is reading this folder{who}, so {what} cannot "
                f"rewrite it now; {hint}")
    except BlockingIOError:
        return (f"{directory}: another stage is running on this folder{who}, so {what} cannot "
                f"start; {hint}")
