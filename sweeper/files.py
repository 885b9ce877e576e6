"""Every write into a results folder (torch-free): never through a link, never half done, readable by the group.

A results folder is often shared (a group-writable project space), so anyone in the group can
plant a symbolic link where a run's file or folder will go. The rules here keep a job from being
turned against its owner:

- a run folder, and each named entry in it (metrics.jsonl, adapter/, checkpoint/, ...), is checked
  with lstat before use; a link there is `UnsafePath`, one line naming it, and nothing is followed;
- appends open with O_NOFOLLOW; whole files and folders are written under a unique temporary name
  in the same folder (mkstemp / mkdtemp), then renamed over the final name (a rename replaces a
  link, it never writes through one);
- files get the mode the umask allows (mkstemp makes 0600: a colleague's collect could not read it);
- a write that fails (disk full, quota, I/O error) removes its temporary and raises `StorageError`,
  which the skip rule treats as transient (re-run by a plain relaunch);
- `RunLock`: one process per run folder (a flock on <run_dir>/.lock, opened with O_NOFOLLOW).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

# errnos that say the storage failed, not the point: a relaunch (after space is freed) succeeds.
STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG, errno.ESTALE, errno.EROFS}
# Writers that wrap the OSError in their own type (safetensors' Rust IoError, torch's stream writer).
STORAGE_WORDS = ("No space left", "Disk quota", "Input/output error", "File too large", "file write failed")


class TransientError(Exception):
    """The environment failed, not the point (storage, a corrupt file): a relaunch re-runs it."""


class StorageError(TransientError):
    """A write into the results folder failed (disk full, quota, I/O error); its temporary is gone."""


class CorruptFile(TransientError):
    """A file we wrote earlier does not read back (truncated, overwritten); named in the message."""


class UnsafePath(ValueError):
    """A symbolic link where a file or folder of ours should be."""


def _umask() -> int:
    """The process's umask now: from /proc (Linux; no side effect on other threads), else by setting
    it and putting it back."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            return int(next(line for line in f if line.startswith("Umask:")).split()[1], 8)
    except (OSError, StopIteration, ValueError):
        mask = os.umask(0o022)
        os.umask(mask)
        return mask


def file_mode() -> int:
    return 0o666 & ~_umask()


def dir_mode() -> int:
    return 0o777 & ~_umask()


def refuse_link(path: Path | str) -> Path:
    """`path`, after checking it is no symbolic link (absent is fine)."""
    if os.path.islink(path):
        raise UnsafePath(f"{path} is a symbolic link where sweeper writes its own file; refusing to follow it")
    return Path(path)


def run_folder(run_dir: Path | str) -> Path:
    """A run folder <results>/runs/<id>, made if absent; refused when it or runs/ is a link."""
    run_dir = Path(run_dir)
    refuse_link(run_dir.parent)
    refuse_link(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return refuse_link(run_dir)


def is_storage_failure(error: BaseException) -> bool:
    """Whether `error` (or what it wraps) says the disk failed: no space, quota, I/O error."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, StorageError):
            return True
        if isinstance(error, OSError) and error.errno in STORAGE_ERRNOS:
            return True
        if any(word in str(error) for word in STORAGE_WORDS):
            return True
        error = error.__cause__ or error.__context__
    return False


def as_storage_error(error: BaseException, what: Path) -> BaseException:
    """A writer's own wrapper of a storage failure (safetensors, torch) as StorageError; an OSError
    stays itself (its errno says enough)."""
    if is_storage_failure(error) and not isinstance(error, (StorageError, OSError)):
        wrapped = StorageError(f"cannot write {what}: {' '.join(str(error).split())}")
        wrapped.__cause__ = error
        return wrapped
    return error


def open_append(path: Path | str):
    """A text file opened for appending; a link there is UnsafePath, never followed."""
    try:
        return open(path, "a", encoding="utf-8", opener=lambda p, flags: os.open(p, flags | os.O_NOFOLLOW, file_mode()))
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise UnsafePath(f"{path} is a symbolic link where sweeper appends; refusing to follow it") from None
        raise as_storage_error(error, Path(path))  # noqa: B904  its own cause


def read_text(path: Path | str) -> str:
    """A file of ours, read without following a link (a link: UnsafePath)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise UnsafePath(
                f"{path} is a symbolic link where sweeper reads its own file; refusing to follow it"
            ) from None
        raise
    with os.fdopen(fd, encoding="utf-8") as f:
        return f.read()


def write_file(path: Path | str, write: Callable[[str], None]) -> Path:
    """Atomically (re)place the file `path`: `write(tmp)` fills a unique temporary beside it, which
    then replaces `path` (readers see the old file or the whole new one)."""
    path = refuse_link(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, file_mode())
        os.close(fd)
        write(tmp)
        os.replace(tmp, path)
    except BaseException as error:
        _remove(tmp)
        raise as_storage_error(error, path)  # noqa: B904  its own cause
    return path


def atomic_write_text(path: Path | str, text: str) -> None:
    """Write `text` to `path` so that readers see either the old file or the whole new one."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    write_file(path, write)


def write_folder(path: Path | str, write: Callable[[Path], None]) -> Path:
    """(Re)place the folder `path`: `write(tmp)` fills a fresh unique folder beside it, which then
    takes its name (the old one set aside, then removed). A folder planted with links inside is
    replaced, never written into."""
    path = refuse_link(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        write(tmp)
        honour_umask(tmp)
    except BaseException as error:
        shutil.rmtree(tmp, ignore_errors=True)
        raise as_storage_error(error, path)  # noqa: B904  its own cause
    return publish_dir(tmp, path, replace=True)


def honour_umask(folder: Path) -> None:
    """Modes of a folder we made (mkdtemp: 0700) and its files, as the umask allows."""
    os.chmod(folder, dir_mode())
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            if not os.path.islink(os.path.join(root, name)):
                os.chmod(os.path.join(root, name), dir_mode())
        for name in files:
            if not os.path.islink(os.path.join(root, name)):
                os.chmod(os.path.join(root, name), file_mode())


def publish_dir(tmp: Path, final: Path, *, replace: bool = False) -> Path:
    """Give a fully written folder `tmp` its final name.

    replace=False (caches: any complete copy will do): if another process published first, keep
    theirs. replace=True (checkpoints, adapters: the newest wins): the old folder is moved aside,
    then removed.
    """
    tmp, final = Path(tmp), refuse_link(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if replace:
        if final.exists():  # aside under a unique name (a rename replaces the empty folder mkdtemp made)
            old = tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent)
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
        return final
    try:
        os.rename(tmp, final)
    except OSError:
        if not final.exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def file_sha256(path: Path | str) -> str:
    """The sha256 of a file, read in 1 MiB blocks (checkpoints and caches verify their files with it)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# ---------------------------------------------------------------- one process per run folder
LOCK_NAME = ".lock"  # <run_dir>/.lock: flock-ed by the process training the point (RunLock)


class RunLock:
    """An exclusive, non-blocking flock on <run_dir>/.lock while a process trains the point.

    Two launches of one grid (two terminals, a relaunch during a detached sweep, an orphaned
    worker) would otherwise train one folder at once: checkpoints race, the last record wins. The
    kernel (or NFS's lock manager) drops the lock with the process, so a killed job leaves none."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_NAME
        self.fd: int | None = None

    def acquire(self) -> bool:
        """True when held; False when another process holds it; UnsafePath for a planted link."""
        run_folder(self.path.parent)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, file_mode())
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise UnsafePath(f"{self.path} is a symbolic link; refusing to follow it") from None
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock
            self.fd = None
