"""One run per folder: the run settings (``run.json``) and the lock of a working run.

A run folder records the settings that change outputs in ``run.json``, claimed atomically by
the first run (:func:`claim_run_settings`); a run with other settings is refused, even when both
start at once.  While a run (or one shard of it) works it holds a lock (:class:`RunLock`,
released when the process ends, however it ends), so the same run started twice at once is
refused too.  Temporaries of killed runs are removed when the next run starts
(:func:`drdm.io.remove_stale_temporaries`).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..io.files import default_file_mode, scratch_path

__all__ = [
    "RUN_SETTINGS_NAME",
    "RunLock",
    "check_run_settings",
    "claim_run_settings",
    "write_run_settings",
]

RUN_SETTINGS_NAME = "run.json"


def _run_record(command: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    # normalise tuples etc. as JSON stores them
    return json.loads(json.dumps({"command": command, "settings": dict(settings)}))


def check_run_settings(out: str | Path, command: str, settings: Mapping[str, Any]) -> None:
    """Check that ``out`` holds no run of another command or with other ``settings`` (the
    options that change a sample's output), as recorded in ``out/run.json``.

    Raises :class:`~drdm.errors.InputError` naming the differing settings; writes nothing.
    """
    path = Path(out) / RUN_SETTINGS_NAME
    if not path.exists():
        return
    record = _run_record(command, settings)
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        old = None
    if not isinstance(old, dict) or not isinstance(old.get("settings"), dict):
        raise InputError(f"{path}: unreadable run settings; use another output folder")
    if old.get("command") != command:
        raise InputError(
            f"{out}: holds the outputs of 'drdm {old.get('command')}', not of "
            f"'drdm {command}'; use another output folder"
        )
    differ = sorted(
        k
        for k in set(old["settings"]) | set(record["settings"])
        if old["settings"].get(k) != record["settings"].get(k)
    )
    if differ:
        what = ", ".join(
            f"{k}: {old['settings'].get(k)!r} there, {record['settings'].get(k)!r} now"
            for k in differ
        )
        raise InputError(
            f"{out}: holds a run with other settings ({what}); use another output folder"
        )


def write_run_settings(out: str | Path, command: str, settings: Mapping[str, Any]) -> None:
    """Write ``out/run.json`` unless it exists (:func:`claim_run_settings` without the
    comparison)."""
    path = Path(out) / RUN_SETTINGS_NAME
    if not path.exists():
        claim_run_settings(out, command, settings)


def claim_run_settings(out: str | Path, command: str, settings: Mapping[str, Any]) -> bool:
    """Record ``settings`` in ``out/run.json`` unless a run did already, atomically: of several
    runs starting at once exactly one writes the file (a complete temporary is hard-linked to
    the name, which fails when the name exists), and every other one compares its settings
    with the file (:func:`check_run_settings`).

    Returns ``True`` when this call wrote the file. Raises :class:`~drdm.errors.InputError`
    when the folder holds a run of another command or with other settings.
    """
    path = Path(out) / RUN_SETTINGS_NAME
    record = _run_record(command, settings)
    text = json.dumps(record, indent=2, sort_keys=True) + "\n"
    with scratch_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
        os.chmod(tmp, default_file_mode())
        try:
            os.link(tmp, path)
        except FileExistsError:
            check_run_settings(out, command, settings)
            return False
        except OSError:  # a file system without hard links: exclusive create instead
            try:
                with open(path, "x", encoding="utf-8") as handle:
                    handle.write(text)
            except FileExistsError:
                check_run_settings(out, command, settings)
                return False
    return True


class RunLock:
    """An exclusive lock on a run folder (or on one shard of it) while a run works in it.

    ``with RunLock(out, "manifest"):`` holds ``out/.drdm-manifest.lock`` (an ``flock``, which
    the operating system releases when the process ends, even by SIGKILL); a second process
    asking for the same lock gets an :class:`~drdm.errors.InputError` naming the holder. The
    file records the holder (host and process id) and is removed on release.
    """

    def __init__(self, folder: str | Path, name: str = "manifest") -> None:
        self.path = Path(folder) / f".drdm-{name}.lock"
        self._handle: Any = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`~drdm.errors.InputError`."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no lock
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held until release
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                handle.close()
                raise InputError(
                    f"{self.path.parent}: another drdm run works in this folder ({holder}); "
                    "wait for it to finish or use another output folder"
                ) from None
            try:  # the file may have been removed by its previous holder after we opened it
                same = os.fstat(handle.fileno()).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            handle.close()
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        """Remove the lock file and release the lock."""
        if self._handle is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._handle.close()
        self._handle = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
