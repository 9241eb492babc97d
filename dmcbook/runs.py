"""Run folders that belong to one configuration, are written by one process at a time, and
whose files can be checked.

A run folder holds ``history.json``, ``checkpoint.pt``, ``best.pt`` (each checkpoint with a
``.sha256`` sidecar) and, for shipped runs, ``weights.safetensors``. :func:`config_differences`
says whether a stored run is the one a caller asks for, :func:`run_lock` keeps a second process
out while one writes, and :func:`atomic_write` never leaves half a file or a stray temporary.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
import socket
import warnings
from pathlib import Path

# What makes two runs the same run. Left out: the run's name, chapter and mode (where it is
# filed), its parameter count (derived from the model) and the recipe's free-text note.
IDENTITY_KEYS = ("model", "model_options", "stem", "in_chans", "num_classes", "dataset", "data", "seed", "recipe")
RUN_FILES = ("history.json", "checkpoint.pt", "checkpoint.pt.sha256", "best.pt", "best.pt.sha256",
             "weights.safetensors")
LOCK_NAME = ".lock"


class RunFolderError(ValueError):
    """A run folder holds another run, is in use by another process, or cannot be written."""


class CorruptFile(ValueError):
    """A file's bytes differ from the digest written with it."""


def _plain(value):
    """JSON's view of a value (tuples become lists), so stored and live configs compare equal."""
    return json.loads(json.dumps(value))


def config_differences(stored: dict, current: dict, recipe_defaults: dict | None = None) -> list[str]:
    """``key: stored -> current`` for every identity field that differs. A recipe field missing
    from an older history counts as its default (``recipe_defaults``)."""
    stored, current = _plain(stored), _plain(current)
    diffs = []
    for key in IDENTITY_KEYS:
        old, new = stored.get(key), current.get(key)
        if key == "recipe" and isinstance(old, dict) and isinstance(new, dict):
            defaults = _plain(recipe_defaults or {})
            for field in sorted((set(old) | set(new)) - {"note"}):
                a, b = old.get(field, defaults.get(field)), new.get(field, defaults.get(field))
                if a != b:
                    diffs.append(f"recipe.{field}: {a!r} -> {b!r}")
        elif old != new:
            diffs.append(f"{key}: {old!r} -> {new!r}")
    return diffs


def has_run(out_dir: Path) -> bool:
    """Whether ``out_dir`` already holds a run's files."""
    return any((Path(out_dir) / name).exists() for name in ("history.json", "checkpoint.pt", "best.pt"))


def remove_run(out_dir: Path) -> None:
    """Delete a run's files (and only those) so that the folder can hold a new run."""
    for name in RUN_FILES:
        with contextlib.suppress(FileNotFoundError):
            (Path(out_dir) / name).unlink()


def check_writable(out_dir) -> Path:
    """``out_dir`` as a Path, after checking that it is (or can be created as) a writable folder."""
    out_dir = Path(out_dir)
    existing = out_dir
    while not existing.exists():
        if existing.is_symlink() or existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise RunFolderError(f"run folder {out_dir}: {existing} exists and is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RunFolderError(f"run folder {out_dir}: {existing} is not writable by this user")
    return out_dir


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


@contextlib.contextmanager
def run_lock(out_dir):
    """Hold ``out_dir/.lock`` (created with O_EXCL, holding ``host pid``) while the block runs.

    A second writer gets :class:`RunFolderError` naming the holder; a lock left by a process of
    this host that no longer exists is taken over. A plain file rather than ``fcntl.flock``
    because it also works on Windows and names its holder in the error message.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lock = out_dir / LOCK_NAME
    me = f"{socket.gethostname()} {os.getpid()}"
    for attempt in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            try:
                host, pid = lock.read_text().split()
                pid = int(pid)
            except (OSError, ValueError):  # vanished, or half written by its creator this instant
                host, pid = "?", -1
            if attempt == 0 and host == socket.gethostname() and not _pid_alive(pid):
                with contextlib.suppress(FileNotFoundError):
                    lock.unlink()  # stale: its process is gone
                continue
            raise RunFolderError(
                f"run folder {out_dir} is in use by process {pid} on {host}; wait for it to finish, "
                f"or delete {lock} if no training runs there") from None
    try:
        with os.fdopen(fd, "w") as f:
            f.write(me)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            if lock.read_text() == me:
                lock.unlink()


def atomic_write(path, write) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place.

    A crash never leaves half a file at ``path``; the temporary's name is unique to this writer
    (pid and a random suffix), so concurrent writers never share one; on any failure (a full
    disk included) it is removed and the error names ``path``.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if isinstance(err, OSError):
            reason = "no space left on the device" if err.errno == errno.ENOSPC else (err.strerror or str(err))
            raise OSError(err.errno, f"could not write {path}: {reason}") from None
        raise


def sha256_of(path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def digest_path(path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def write_checked(path, write) -> None:
    """:func:`atomic_write` plus a ``<path>.sha256`` sidecar (``sha256sum`` format).

    The old sidecar goes first, so a crash between the two renames leaves a file without a
    sidecar (loaded with a warning), never a good file beside a wrong digest."""
    path = Path(path)
    digest = {}

    def write_and_hash(tmp):
        write(tmp)
        digest["sha256"] = sha256_of(tmp)

    with contextlib.suppress(FileNotFoundError):
        digest_path(path).unlink()
    atomic_write(path, write_and_hash)
    atomic_write(digest_path(path), lambda p: p.write_text(f"{digest['sha256']}  {path.name}\n"))


def verify(path, expected: str | None = None) -> None:
    """Refuse a file whose SHA-256 differs from ``expected`` (else from its ``.sha256`` sidecar).

    Decision for files without any digest (checkpoints written before digests existed, or a
    checkpoint copied without its sidecar): they load with a warning, since refusing them would
    strand every older run, and a file the unpickler cannot read is still refused by it.
    """
    path = Path(path)
    if expected is None:
        sidecar = digest_path(path)
        if not sidecar.exists():
            warnings.warn(f"{path} has no {sidecar.name}; its integrity cannot be checked", stacklevel=3)
            return
        fields = sidecar.read_text().split()
        expected = fields[0] if fields else ""
    actual = sha256_of(path)
    if actual != expected:
        raise CorruptFile(f"{path} is corrupt: its SHA-256 is {actual[:12]}..., but it was written as "
                          f"{expected[:12]}...; delete the run folder (or use --overwrite) and train again")
