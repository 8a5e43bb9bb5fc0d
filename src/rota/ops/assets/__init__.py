"""The ops UI's third-party browser assets (Bootstrap, jQuery, DataTables, Notyf,
and Swagger UI for /docs).

They come from the npm registry through ``npm install``, at set-up time, never
from a CDN and never committed: ``ensure_assets()`` installs the exact versions
of ``package.json`` beside this file into a cache directory and copies the
files the pages load into ``rota/static/rota_ops/vendor/`` (gitignored). It is
called by ``rota assets``, by ``rota up`` when the files are missing, and by
``scripts/test``. No lockfile is written: a lockfile records registry hosts.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

from rota.errors import RotaError

PACKAGE_JSON = Path(__file__).with_name("package.json")
VENDOR_DIR = Path(__file__).resolve().parents[2] / "static" / "rota_ops" / "vendor"
STAMP = "versions.json"

#: node_modules path → path under vendor/. Everything a page loads, nothing more.
FILES = {
    "bootstrap/dist/css/bootstrap.min.css": "bootstrap/bootstrap.min.css",
    "bootstrap/dist/js/bootstrap.bundle.min.js": "bootstrap/bootstrap.bundle.min.js",
    "jquery/dist/jquery.min.js": "jquery/jquery.min.js",
    "datatables.net/js/dataTables.min.js": "datatables/dataTables.min.js",
    "datatables.net-bs5/js/dataTables.bootstrap5.min.js": "datatables/dataTables.bootstrap5.min.js",
    "datatables.net-bs5/css/dataTables.bootstrap5.min.css": "datatables/dataTables.bootstrap5.min.css",
    "notyf/notyf.min.js": "notyf/notyf.min.js",
    "notyf/notyf.min.css": "notyf/notyf.min.css",
    # /docs (Swagger UI), served from here instead of a CDN.
    "swagger-ui-dist/swagger-ui-bundle.js": "swagger-ui/swagger-ui-bundle.js",
    "swagger-ui-dist/swagger-ui.css": "swagger-ui/swagger-ui.css",
}


class AssetsError(RotaError):
    """The assets could not be installed; the message says what to do."""


def default_cache_dir() -> Path:
    """``ROTA_ASSETS_CACHE``, else ``build/ops-assets`` of a source checkout, else
    ``~/.cache/rota/ops-assets``."""
    if os.environ.get("ROTA_ASSETS_CACHE"):
        return Path(os.environ["ROTA_ASSETS_CACHE"])
    checkout = Path(__file__).resolve().parents[4]
    if (checkout / "pyproject.toml").exists() and os.access(checkout, os.W_OK):
        return checkout / "build" / "ops-assets"
    return Path.home() / ".cache" / "rota" / "ops-assets"


def _wanted() -> dict[str, str]:
    return json.loads(PACKAGE_JSON.read_text())["dependencies"]


def _fingerprint() -> str:
    return hashlib.sha256(PACKAGE_JSON.read_bytes()).hexdigest()[:16]


def assets_present(vendor_dir: Path = VENDOR_DIR) -> bool:
    """True when every vendor file is there, from the versions package.json names."""
    try:
        stamp = json.loads((vendor_dir / STAMP).read_text())
    except (OSError, ValueError):
        return False
    return stamp.get("fingerprint") == _fingerprint() and all(
        (vendor_dir / target).is_file() for target in FILES.values()
    )


def ensure_assets(
    *, force: bool = False, cache_dir: Path | None = None, vendor_dir: Path = VENDOR_DIR
) -> bool:
    """Install the assets unless they are present already. Returns True when it
    installed them. Raises AssetsError when npm is missing or fails."""
    if not force and assets_present(vendor_dir):
        return False
    npm = shutil.which("npm")
    if npm is None:
        raise AssetsError(
            "npm is not installed; the ops UI needs it once to fetch Bootstrap, DataTables "
            "and Notyf from the npm registry",
            hint="install Node.js with npm (Debian: apt-get install -y npm), then run `rota assets`",
        )
    cache = (cache_dir or default_cache_dir()).resolve()
    cache.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(PACKAGE_JSON, cache / "package.json")
    proc = subprocess.run(
        [npm, "install", "--no-package-lock", "--no-audit", "--no-fund", "--omit=dev"],
        cwd=cache,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0:
        raise AssetsError(
            f"npm install failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}",
            hint="check that the npm registry is reachable, then run `rota assets` again",
        )
    modules = cache / "node_modules"
    installed = {}
    for name, version in _wanted().items():
        meta = json.loads((modules / name / "package.json").read_text())
        if meta.get("version") != version:
            raise AssetsError(f"npm installed {name} {meta.get('version')}, not {version}")
        installed[name] = version
    tmp = vendor_dir.with_name(vendor_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for source, target in FILES.items():
        dest = tmp / target
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(modules / source, dest)
    (tmp / STAMP).write_text(
        json.dumps({"fingerprint": _fingerprint(), "packages": installed}, indent=2) + "\n"
    )
    shutil.rmtree(vendor_dir, ignore_errors=True)
    tmp.rename(vendor_dir)
    return True
