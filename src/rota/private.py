"""Private directories: rota's data dir and certificate dirs hold the SQLite
database (sessions and token hashes included), the NATS token, the secret key
and the CA key. Another local user must read none of it (issue 13).

:func:`make_private` runs at every start of ``rota up`` and ``rota certs init``,
not only when the directory is created: a directory an older rota, a backup
restore or another tool left readable is fixed, or the start is refused with a
message saying what to do. :func:`private_umask` makes what the processes
started afterwards create (the WAL, the NATS store, logs) private from birth.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from rota.errors import RotaError

DIR_MODE = 0o700
FILE_MODE = 0o600


class NotPrivate(RotaError):
    """A path under a private directory cannot be made private."""


def make_private(root: Path) -> list[Path]:
    """Create ``root`` if missing, then give it and every directory below mode
    0700 and every file 0600. Symbolic links are left alone (their mode means
    nothing; what they point to is not ours to change). Returns the paths whose
    mode changed. Raises NotPrivate for a path this user cannot change."""
    root.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    changed: list[Path] = []
    for path in [root, *_walk(root)]:
        try:
            st = path.lstat()
        except FileNotFoundError:  # removed meanwhile (a WAL checkpoint)
            continue
        if stat.S_ISLNK(st.st_mode):
            continue
        want = DIR_MODE if stat.S_ISDIR(st.st_mode) else FILE_MODE
        if stat.S_IMODE(st.st_mode) & 0o077 == 0:
            continue
        try:
            os.chmod(path, stat.S_IMODE(st.st_mode) & want)
        except PermissionError:
            raise NotPrivate(
                f"{path} is readable by other users and this user cannot change that",
                hint=f"run: chown -R $(id -un) {root} && chmod -R go-rwx {root}",
            ) from None
        changed.append(path)
    return changed


def _walk(root: Path) -> list[Path]:
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(dirpath)
        out += [base / d for d in dirnames]
        out += [base / f for f in filenames]
    return out


def private_umask() -> int:
    """Set this process's umask to 077 (children inherit it); returns the old one."""
    return os.umask(0o077)
