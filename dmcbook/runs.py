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
import re
import secrets
import socket
import time
import warnings
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: the lock file alone
    fcntl = None

# What makes two runs the same run. Left out: the run's name, chapter and mode (where it is
# filed), its parameter count (derived from the model) and the recipe's free-text note.
IDENTITY_KEYS = ("model", "model_options", "stem", "in_chans", "num_classes", "dataset", "data", "seed", "recipe")
RUN_FILES = ("history.json", "checkpoint.pt", "checkpoint.pt.sha256", "best.pt", "best.pt.sha256",
             "weights.safetensors")
LOCK_NAME = ".lock"
# A lock that names no holder is taken over once older than this: its creator was killed
# between creating it and writing its name (a live creator writes it within microseconds).
LOCK_GRACE_S = 10.0


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
    """Delete a run's files (and only those, with the temporaries killed writers left) so that
    the folder can hold a new run."""
    for name in RUN_FILES:
        with contextlib.suppress(FileNotFoundError):
            (Path(out_dir) / name).unlink()
    remove_temporaries(out_dir)


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


# atomic_write's temporaries, ".NAME.PID.HEX.tmp": the pid tells a dead writer's leftover.
_TEMPORARY = re.compile(r"^\..+\.(\d+)\.[0-9a-f]{8}\.tmp$")


def remove_temporaries(out_dir) -> list[Path]:
    """Delete the temporaries that writers killed mid-write (SIGKILL, power loss) left in
    ``out_dir``; a live process's are kept. Returns the paths deleted."""
    removed = []
    for path in Path(out_dir).glob(".*.tmp"):
        match = _TEMPORARY.match(path.name)
        if match and not _pid_alive(int(match.group(1))):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed


def _kernel_lock(fd: int, wait: bool) -> bool | None:
    """``flock`` on ``fd``: True once held, False while another process holds it, None where
    this system (Windows) or file system has no flock."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        return True
    except BlockingIOError:
        return False
    except OSError:  # ENOLCK, EOPNOTSUPP: a file system without flock
        return None


def _is_the_lock(fd: int, lock: Path) -> bool:
    """Whether the file open as ``fd`` is still the one at ``lock`` (not removed or replaced)."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(lock))
    except FileNotFoundError:
        return False


def _in_use(lock: Path, host: str | None, pid: int | None) -> RunFolderError:
    """The refusal for a live lock (or one that cannot be known stale), saying how to clear it."""
    out_dir = lock.parent
    if host is None:
        return RunFolderError(f"run folder {out_dir} is being claimed by another process right now; try again "
                              f"in a few seconds (a {LOCK_NAME} that names nobody is taken over after "
                              f"{LOCK_GRACE_S:.0f} s)")
    if host != socket.gethostname():
        return RunFolderError(f"run folder {out_dir} is locked by process {pid} on another machine, {host}, and this "
                              "machine cannot tell whether it still runs; if no training runs there (e.g. that Colab "
                              f"session has ended), delete {lock}")
    return RunFolderError(f"run folder {out_dir} is in use by process {pid} on {host}; wait for it to finish, "
                          f"or delete {lock} if no training runs there")


def _remove_if_stale(lock: Path) -> None:
    """Delete ``lock`` when its holder is a process of this host that no longer runs, or when it
    names no holder and is older than LOCK_GRACE_S; otherwise raise RunFolderError naming it.

    The check and the delete happen while holding the file's flock, and only if that file is
    still the lock: two processes can never both take over one stale lock, nor can a slow one
    delete the fresh lock of another (the holder of a lock keeps its flock, see run_lock)."""
    out_dir = lock.parent
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        return  # released meanwhile: try to create it again
    try:
        kernel = _kernel_lock(fd, wait=False)
        text = os.read(fd, 1024).decode(errors="replace").split()
        age = time.time() - os.fstat(fd).st_mtime
        if len(text) == 2 and text[1].isdigit():
            host, pid = text[0], int(text[1])
            stale = host == socket.gethostname() and not _pid_alive(pid)
        else:  # its creator was killed before writing its name, or is writing it this instant
            host, pid, stale = None, None, age > LOCK_GRACE_S
        if kernel is False and stale:  # another process holds its flock to take it over
            raise RunFolderError(f"run folder {out_dir} is being taken over by another process right now "
                                 "(its lock was left by a process that ended); try again in a moment")
        if kernel is False or not stale:
            raise _in_use(lock, host, pid)
        # Without flock (Windows, some network file systems) two processes that take over the
        # same stale lock at the same instant can still both enter.
        if kernel is None or _is_the_lock(fd, lock):
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()
    finally:
        os.close(fd)


@contextlib.contextmanager
def run_lock(out_dir):
    """Hold ``out_dir/.lock`` while the block runs.

    The lock is a file created with O_EXCL that names its holder (``host pid``), so a second
    writer gets :class:`RunFolderError` naming the holder, on any system and across hosts that
    share the folder. A lock of this host whose process is gone, or one that names nobody and
    is older than LOCK_GRACE_S (its creator was killed before writing its name), is taken over;
    one of another host never is (its process cannot be checked from here), and the message
    says how to clear it. On POSIX the holder also keeps a ``fcntl.flock`` on the file, under
    which the takeover happens (see ``_remove_if_stale``). Once the lock is held, temporaries
    left by killed writers are deleted (:func:`remove_temporaries`).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lock = out_dir / LOCK_NAME
    me = f"{socket.gethostname()} {os.getpid()}"
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
        except FileExistsError:
            fd = None
        if fd is None:  # outside the except: a refusal is one error, not one during another
            _remove_if_stale(lock)
            continue
        # A process that inspects the new lock holds its flock a moment; one that took it over
        # (this process stalled for LOCK_GRACE_S before writing its name) has replaced it.
        if _kernel_lock(fd, wait=True) is True and not _is_the_lock(fd, lock):
            os.close(fd)
            continue
        os.write(fd, me.encode())
        break
    else:
        raise RunFolderError(f"run folder {out_dir}: other processes keep taking its lock; try again, "
                             f"or delete {lock} if no training runs there")
    try:
        remove_temporaries(out_dir)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            if lock.read_text() == me:
                lock.unlink()
        if fcntl is not None:  # also for DataLoader workers forked meanwhile, which share it
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _fsync(path: Path, folder: bool = False) -> None:
    """Flush ``path`` (a file, or a folder's entries) to the disk, so that a power loss after the
    rename finds the new file complete. File systems that cannot sync (EINVAL) are let be."""
    if folder and os.name == "nt":  # Windows opens no folders; NTFS journals the rename
        return
    fd = os.open(path, os.O_RDONLY if folder else os.O_RDWR)
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
    finally:
        os.close(fd)


def atomic_write(path, write) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, flush it to the disk, then
    rename it into place (and flush the folder).

    A crash never leaves half a file at ``path``; the temporary's name is unique to this writer
    (pid and a random suffix), so concurrent writers never share one; on any failure (a full
    disk included) it is removed and the error names ``path``. A process killed mid-write leaves
    its temporary, which :func:`remove_temporaries` deletes (the run lock calls it).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        write(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(path.parent, folder=True)
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
