"""Atomic file writes, content hashing and safe image reading.

Caches and model files are written to a temporary file in the destination
folder and renamed over the target, so a killed run leaves either the old file
or the new one, never half of one.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Iterator
from urllib.parse import quote

import numpy as np

logger = logging.getLogger(__name__)

# What reading a truncated, empty or foreign cache entry raises (np.load of a
# cut .npz gives BadZipFile or EOFError, a wrong member KeyError): any of them
# means "treat the entry as missing and recompute it".
UNREADABLE_ENTRY_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    On an exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The writer's pid is in the name, so a later run can tell a temp file left
    # by a killed process from one another live process is still writing.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    # mkstemp creates the file 0600; give it the usual permissions (0666 less the umask).
    os.chmod(tmp, 0o666 & ~_current_umask())
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_npz_atomic(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """np.savez to ``path`` atomically (np.load it with allow_pickle=False)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def file_digest(path: str | os.PathLike, length: int = 16) -> str:
    """Hex SHA-1 of a file's bytes (first ``length`` hex digits): keys caches by content."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:length]


def params_digest(obj, length: int = 16) -> str:
    """Hex SHA-1 of a JSON-serialisable object (sorted keys): keys caches by parameters."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode("utf-8")
    return hashlib.sha1(blob).hexdigest()[:length]


def remove_stale_temp_files(folder: str | os.PathLike) -> int:
    """Delete the hidden ``.tmp`` files that killed writers left in ``folder``.

    A temp file whose writer (the pid in its name) is still alive is kept.
    Returns how many were removed.
    """
    removed = 0
    for tmp in Path(folder).glob(".*.tmp"):
        parts = tmp.name.split(".")
        pid = next((int(p) for p in reversed(parts[:-2]) if p.isdigit()), None)
        if pid is not None and _pid_alive(pid):  # this process's own, or another live writer's
            continue
        try:
            tmp.unlink()
            removed += 1
        except FileNotFoundError:
            pass
    if removed:
        logger.warning("%s: removed %d temporary file(s) left by an interrupted run", folder, removed)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def safe_file_name(name: str) -> str:
    """A file-name-safe, reversible form of an image id or key ("a/b" -> "a%2Fb")."""
    quoted = quote(str(name), safe="-_.") or "_"
    # "." and ".." pass quote() but name a folder itself and its parent (a store folder per split).
    return quoted.replace(".", "%2E") if quoted in (".", "..") else quoted


def cache_entry_path(folder: str | os.PathLike, image_id: str, suffix: str) -> Path:
    """Where a per-image cache entry of ``image_id`` lives in ``folder`` (every cache names them so)."""
    return Path(folder) / f"{safe_file_name(image_id)}{suffix}"


def dir_size_bytes(folder: str | os.PathLike, pattern: str = "*") -> int:
    """Bytes of the files in ``folder`` matching ``pattern`` (not recursive)."""
    return sum(p.stat().st_size for p in Path(folder).glob(pattern) if p.is_file())


# Below this much free space an output folder is refused before any work starts.
MIN_FREE_BYTES = 50 * 1024 * 1024


def check_output_dir(path: str | os.PathLike, what: str = "output folder",
                     min_free_bytes: int = MIN_FREE_BYTES) -> Path:
    """Create ``path`` if needed and check it can take files, before any work is done.

    Raises:
        OutputError: ``path`` (or a parent) is a file, the folder is not
            writable, or its disk has less than ``min_free_bytes`` free.
    """
    path = Path(path)
    for parent in [path, *path.parents]:
        if parent.exists() and not parent.is_dir():
            raise OutputError(f"{what} {path}: {parent} exists and is a file, not a folder")
        if parent.exists():
            break
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{what} {path}: cannot create it ({e.strerror or e})") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-check.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputError(f"{what} {path}: not writable ({e.strerror or e})") from None
    free = _free_bytes(path)
    if free < min_free_bytes:
        raise OutputError(f"{what} {path}: only {free / 2**20:.1f} MB free on its disk "
                          f"(needs at least {min_free_bytes / 2**20:.0f} MB)")
    return path


def _free_bytes(path: Path) -> int:
    import shutil
    return shutil.disk_usage(path).free


class OutputError(ValueError):
    """An output file or folder cannot be written; the message names it and why."""
