"""A directory laid out and updated the way the kubelet lays out a mounted Secret.

The kubelet's atomic writer (``pkg/volume/util/atomic_writer.go``) keeps the
files in a timestamped directory, points ``..data`` at it, and makes each key a
symlink through ``..data`` (``tls.crt -> ..data/tls.crt``). An update writes a
new timestamped directory, points ``..data_tmp`` at it, renames that over
``..data`` (the one atomic step) and removes the old directory. cert-manager
renewing a Certificate changes the Secret; this is what a pod then sees.
"""

from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path

_serial = itertools.count()


class SecretVolume:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def write(self, files: dict[str, bytes]) -> None:
        """Publish ``files`` as the volume's new content, atomically."""
        old = os.readlink(self.root / "..data") if (self.root / "..data").is_symlink() else None
        stamp = f"..2026_12_02_00_00_00.{os.getpid()}{next(_serial):06d}"
        new_dir = self.root / stamp
        new_dir.mkdir()
        for name, data in files.items():
            (new_dir / name).write_bytes(data)
            (new_dir / name).chmod(0o644)
        tmp = self.root / "..data_tmp"
        os.symlink(stamp, tmp)
        os.rename(tmp, self.root / "..data")
        for name in files:
            link = self.root / name
            if not link.is_symlink():
                os.symlink(f"..data/{name}", link)
        if old:
            shutil.rmtree(self.root / old)

    def write_dir(self, source: Path, names: tuple[str, ...] = ("tls.crt", "tls.key", "ca.crt")):
        self.write({n: (Path(source) / n).read_bytes() for n in names})
