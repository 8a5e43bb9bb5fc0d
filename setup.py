"""Build hooks: every wheel and sdist of rota carries the ops UI's browser assets.

The metadata is in pyproject.toml; this file only adds two build steps. Building a
wheel (``python -m build``, ``pip wheel .``) installs the assets that
``rota.ops.assets`` names into the wheel's ``rota/static/rota_ops/vendor/`` with
npm (the npm cache is reused; a tree that has them already, such as an unpacked
sdist, needs no npm), so ``pip install rota-*.whl`` gives the whole ops UI on a
machine without Node.js. Building an sdist installs them into the source tree
first, so the sdist carries them too. An editable install (``pip install -e .``)
builds nothing: ``rota up`` fetches them on first start, as ``rota assets`` does.
``ROTA_BUILD_ASSETS=0`` builds without them (then ``rota up`` fetches them too,
with npm, into the installed package).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import ModuleType

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

SRC = Path(__file__).resolve().parent / "src"


def _wanted() -> bool:
    return os.environ.get("ROTA_BUILD_ASSETS", "1") != "0"


def _assets() -> ModuleType:
    """``rota.ops.assets`` of this tree (it imports nothing outside the standard
    library but ``rota.errors``)."""
    sys.path.insert(0, str(SRC))
    try:
        from rota.ops import assets
    finally:
        sys.path.remove(str(SRC))
    return assets


class BuildPyWithAssets(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode or not _wanted():
            return
        assets = _assets()
        vendor = Path(self.build_lib) / "rota" / "static" / "rota_ops" / "vendor"
        try:
            if assets.ensure_assets(vendor_dir=vendor):
                print(f"rota: installed the ops UI's assets into {vendor}")
        except assets.AssetsError as exc:
            raise SystemExit(
                f"rota: cannot build the ops UI's assets: {exc} "
                "(ROTA_BUILD_ASSETS=0 builds without them)"
            ) from None


class SdistWithAssets(sdist):
    def run(self) -> None:
        if _wanted():
            assets = _assets()
            try:
                assets.ensure_assets()
            except assets.AssetsError as exc:
                raise SystemExit(f"rota: cannot build the ops UI's assets: {exc}") from None
        super().run()


setup(cmdclass={"build_py": BuildPyWithAssets, "sdist": SdistWithAssets})
