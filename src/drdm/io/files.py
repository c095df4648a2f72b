"""Files and folders: atomic writes, stale temporaries, output-folder checks, file stems.

The one home of these helpers: every file the package writes goes through
:func:`atomic_path` (a hidden temporary beside the target, renamed onto it only when complete),
so an interrupted run never leaves a truncated output. Temporary names carry the writing
process's host and id (``.NAME.<host>-<pid>.<random>.part``), so that
:func:`remove_stale_temporaries` can delete those left by a killed process (SIGKILL runs no
clean-up) without touching the temporaries of processes still writing.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import os
import re
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import InputError

__all__ = [
    "IMAGE_SUFFIXES",
    "atomic_path",
    "atomic_write",
    "check_output_file",
    "check_output_folder",
    "default_file_mode",
    "describe_os_error",
    "file_sha256",
    "file_stem",
    "image_suffix",
    "name_os_error",
    "remove_stale_temporaries",
    "scratch_path",
]

#: image file endings the readers recognise (longest first where one ends another)
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")

_TEMP = re.compile(r"^\..+\.(?P<host>[A-Za-z0-9_-]+)-(?P<pid>\d+)\.[^.]+\.part(\..*)?$")


def image_suffix(path: str | Path) -> str | None:
    """The recognised image suffix of ``path`` (``.nii.gz``, ``.mha``, ...), else ``None``."""
    name = Path(path).name.lower()
    for suffix in IMAGE_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return None


def file_stem(path: str | Path) -> str:
    """The name a file contributes to output names: its name without the image suffix
    (``.nii.gz``, ``.nii``, ``.mha``, ``.mhd``, ``.nrrd``, ``.nhdr``), without its last suffix
    otherwise, or a folder's (e.g. a DICOM series') name."""
    path = Path(path)
    suffix = image_suffix(path)
    if suffix and len(path.name) > len(suffix):
        return path.name[: -len(suffix)]
    if path.is_dir():
        return path.name
    return path.stem or path.name


@functools.cache
def default_file_mode() -> int:
    """The permissions a plain ``open()`` gives a new file: 0666 minus the process umask,
    read once (reading the umask means setting it, which is not thread-safe)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:40] or "host"


@contextlib.contextmanager
def scratch_path(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary file beside ``path`` (``.NAME.<host>-<pid>.<random>.part``,
    the folder created if needed), removed when the block ends unless it was moved away."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}.{_host()}-{os.getpid()}."
    fd, tmp_name = tempfile.mkstemp(prefix=prefix, suffix=".part", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    The temporary (:func:`scratch_path`) is removed when the block raises. A file written by
    the block gets the permissions a plain ``open()`` would give (0666 minus the umask).
    """
    path = Path(path)
    with contextlib.ExitStack() as stack:
        try:
            tmp = stack.enter_context(scratch_path(path))
        except OSError as exc:
            raise name_os_error(exc, path) from None
        try:
            yield tmp
            os.chmod(tmp, default_file_mode())
            os.replace(tmp, path)
        except OSError as exc:
            raise name_os_error(exc, path) from None


def atomic_write(path: str | Path, data: bytes | str, *, fsync: bool = False) -> Path:
    """Write ``data`` (bytes, or text encoded as UTF-8) to ``path`` through
    :func:`atomic_path`; returns ``path``.

    ``fsync=True`` flushes the temporary to the disk before the rename (checkpoints). An
    :class:`OSError` (e.g. a full disk, which names no file) is raised naming ``path``.
    """
    path = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        handle.write(raw)
        if fsync:
            handle.flush()
            os.fsync(handle.fileno())
    return path


def name_os_error(exc: OSError, path: str | Path) -> OSError:
    """``exc`` naming ``path`` when it names no file or only a temporary of
    :func:`scratch_path` (e.g. a full disk while writing: ``ENOSPC`` without a file name), so
    the one-line message says which output failed; other errors are returned unchanged."""
    name = exc.filename
    if name is not None and not _TEMP.match(Path(os.fsdecode(name)).name):
        return exc
    named = type(exc)(exc.errno, exc.strerror or str(exc), str(path))
    named.__cause__ = exc
    return named


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(folder: str | Path, recursive: bool = True) -> list[Path]:
    """Delete the temporaries of :func:`atomic_path` left in ``folder`` by processes of this
    host that no longer run (e.g. killed with SIGKILL); returns the files removed.

    Temporaries of running processes and of other hosts (a shared file system) are kept.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    host = _host()
    removed = []
    candidates = folder.rglob(".*.part*") if recursive else folder.glob(".*.part*")
    for path in candidates:
        match = _TEMP.match(path.name)
        if match is None or match["host"] != host or _alive(int(match["pid"])):
            continue
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    return removed


def _folder_problem(path: Path) -> str | None:
    """Why no file can be written into the folder ``path`` (created if needed), or ``None``."""
    if path.exists() and not path.is_dir():
        return f"{path} exists and is not a folder"
    existing = path
    while not existing.exists() and existing.parent != existing:
        if existing.is_symlink():  # exists() is False: dangling or a loop
            target = os.readlink(existing)
            return f"{existing} is a broken symbolic link (to {target}: missing or a loop)"
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        return f"{existing} is a file, not a folder"
    if existing.is_dir() and not os.access(existing, os.W_OK | os.X_OK):
        return f"cannot write into {existing} (permission denied)"
    return None


def check_output_folder(path: str | Path, option: str = "path") -> Path:
    """Check that ``path`` is, or can be created as, a folder this process can write into.

    Raises :class:`~drdm.errors.InputError` (one line naming ``option``, what the caller calls
    the path, e.g. a command's ``--out``, and the path) when ``path`` or one of its parents is
    a file, or when the nearest existing folder is not writable. Creates nothing.
    """
    _check_not_empty(path, option)
    path = Path(path)
    problem = _folder_problem(path)
    if problem is not None:
        raise InputError(f"{option} {path}: {problem}")
    return path


def _check_not_empty(path: str | Path, option: str) -> None:
    """An empty name (e.g. an unset shell variable) would mean the current folder."""
    if isinstance(path, str) and not path.strip():
        raise InputError(f"{option} {path!r}: empty path (an unset shell variable?)")


def check_output_file(path: str | Path, option: str = "path") -> Path:
    """Check that a file can be written at ``path``: not a folder, and its folder writable or
    creatable (as :func:`check_output_folder`). Creates nothing."""
    _check_not_empty(path, option)
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{option} {path}: is a folder, expected a file name")
    problem = _folder_problem(path.parent)
    if problem is not None:
        raise InputError(f"{option} {path}: {problem}")
    return path


def describe_os_error(exc: OSError) -> str:
    """One line for an :class:`OSError`: ``FILE: reason`` (e.g. permission denied)."""
    reason = exc.strerror or errno.errorcode.get(exc.errno or 0, "") or type(exc).__name__
    name = exc.filename if exc.filename is not None else ""
    reason = reason[0].lower() + reason[1:] if reason else reason
    return f"{name}: {reason}" if name else reason


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
