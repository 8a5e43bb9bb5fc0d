"""rota built and installed as a user gets it (issue 21 item 5): `python -m build`
makes an sdist and a wheel from a clean copy of this checkout (the build runs npm
for the ops UI's assets), the wheel goes into a fresh venv, and `rota up` from
that venv, with node and npm nowhere on PATH, serves the whole ops UI and /docs:
Debian's chromium loads them and every request answers 200 from rota itself."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

from rota.bus.server import free_port
from tests.conftest import CI
from tests.e2e.conftest import clean_env
from tests.ui.conftest import CHROMIUM_ARGS

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
VENDOR = "rota/static/rota_ops/vendor/"
#: Programs a machine without Node.js does not have.
NODE_PROGRAMS = {"node", "nodejs", "npm", "npx", "corepack"}


def _skip_or_fail(reason: str) -> None:
    if CI:
        pytest.fail(reason)
    pytest.skip(reason)


def _run(argv: list[str], **kw) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def]
    out = subprocess.run(argv, capture_output=True, text=True, **kw)
    assert out.returncode == 0, f"{argv}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


def _clean_copy(dest: Path) -> Path:
    """The checkout's files as git sees them (tracked, and new ones not ignored):
    no installed assets, no build directory."""
    listed = _run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT
    ).stdout
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    assert not (dest / "src" / VENDOR).exists()
    return dest


def _path_without_node(tmp: Path) -> str:
    """A PATH with every program of the usual directories except Node.js's."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    for directory in ("/usr/local/bin", "/usr/bin", "/bin"):
        if not os.path.isdir(directory):
            continue
        for name in os.listdir(directory):
            if name in NODE_PROGRAMS or (bin_dir / name).exists():
                continue
            (bin_dir / name).symlink_to(os.path.join(directory, name))
    return str(bin_dir)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    if shutil.which("npm") is None:
        _skip_or_fail("npm is needed to build the wheel (apt-get install -y npm)")
    tmp = tmp_path_factory.mktemp("wheel")
    tree = _clean_copy(tmp / "tree")
    dist = tmp / "dist"
    _run([sys.executable, "-m", "build", "--outdir", str(dist), str(tree)], timeout=600)
    (wheel,) = dist.glob("rota-*.whl")
    (sdist,) = dist.glob("rota-*.tar.gz")
    return {"tmp": tmp, "wheel": wheel, "sdist": sdist}


def test_the_wheel_and_the_sdist_carry_the_assets(built):
    from rota.ops.assets import FILES

    wanted = {VENDOR + target for target in FILES.values()} | {VENDOR + "versions.json"}
    with zipfile.ZipFile(built["wheel"]) as whl:
        names = set(whl.namelist())
    assert wanted <= names, sorted(wanted - names)
    assert "rota/ops/assets/package.json" in names
    with tarfile.open(built["sdist"]) as tar:
        in_sdist = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert {"src/" + w for w in wanted} <= in_sdist, sorted({"src/" + w for w in wanted} - in_sdist)


def test_installed_wheel_serves_the_whole_ops_ui_and_docs_without_node(built):
    executable = shutil.which("chromium")
    if executable is None:
        _skip_or_fail("Debian's chromium is not installed (apt-get install -y chromium)")
    tmp: Path = built["tmp"]
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    _run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(built["wheel"])],
        timeout=600,
    )
    path = f"{venv / 'bin'}:{_path_without_node(tmp)}"
    assert all(shutil.which(p, path=path) is None for p in NODE_PROGRAMS)
    home = tmp / "home"
    home.mkdir()
    port = free_port()
    log = tmp / "up.log"
    env = clean_env(PATH=path, HOME=str(home), ROTA_SHUTDOWN_GRACE_SECONDS="3")
    env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONPATH", None)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["rota", "up", "--data-dir", str(tmp / "data"), "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp,
        )
    try:
        banner = _wait_for_banner(proc, log)
        url = re.search(r"rota is up: (\S+)", banner).group(1)  # type: ignore[union-attr]
        password = re.search(r"password: (\S+)", banner).group(1)  # type: ignore[union-attr]
        assert "installing the ops UI's assets" not in banner
        assert "no styles or scripts" not in banner
        # The rota that runs is the wheel's, not this checkout's.
        where = _run(
            [str(venv / "bin" / "python"), "-c", "import rota; print(rota.__file__)"],
            env=env,
            cwd=tmp,
        ).stdout
        assert where.startswith(str(venv)), where
        _browse(executable, url, password)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.wait(60)


def _wait_for_banner(proc: subprocess.Popen, log: Path, timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if "rota is up" in text and "API token" in text:
            return text
        if proc.poll() is not None:
            raise AssertionError(f"rota up exited with {proc.returncode}:\n{text}")
        time.sleep(0.2)
    raise AssertionError(f"rota up did not start within {timeout}s:\n{log.read_text()}")


def _browse(executable: str, url: str, password: str) -> None:
    """Log in from the banner's address, open the dashboard, the runs table and
    /docs; every request must go to rota and answer 200 (or a redirect, or a
    revalidation of what answered 200)."""
    from playwright.sync_api import sync_playwright

    origin = url.split("/ops/")[0]
    responses: list[tuple[str, int, str]] = []
    failed: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(20_000)
            page.on(
                "response",
                lambda r: responses.append((r.url, r.status, r.request.resource_type)),
            )
            page.on("requestfailed", lambda r: failed.append(f"{r.url}: {r.failure}"))
            page.goto(url)
            assert "/ops/login/" in page.url
            page.fill("#id_username", "admin")
            page.fill("#id_password", password)
            page.click("button[type=submit]")
            page.wait_for_url("**/ops/")
            assert page.locator("h1").first.inner_text() == "Dashboard"
            # Bootstrap's stylesheet applied: the navbar is laid out as a flexbox.
            assert (
                page.evaluate("getComputedStyle(document.querySelector('.navbar')).display")
                == "flex"
            )
            page.goto(origin + "/ops/runs/")
            page.wait_for_selector(".dt-container")  # DataTables drew its table
            page.goto(origin + "/docs")
            page.wait_for_selector(".swagger-ui .information-container .title")
            assert "rota" in page.locator(".swagger-ui .title").first.inner_text()
            page.wait_for_selector(".opblock-tag-section")  # the schema loaded and rendered
        finally:
            browser.close()
    assert not failed, failed
    foreign = [u for u, _, _ in responses if not u.startswith(origin)]
    assert not foreign, foreign
    assets = [
        (u, s) for u, s, kind in responses if kind in ("stylesheet", "script", "font", "image")
    ]
    assert any(u.endswith("bootstrap.min.css") for u, _ in assets), assets
    assert any("swagger" in u for u, _ in assets), assets
    # 302: the login's redirects; 304: a later page revalidating what the
    # browser loaded with 200 before.
    loaded = {u for u, s, _ in responses if s == 200}
    bad = [
        (u, s)
        for u, s, _ in responses
        if s not in (200, 302, 304) or (s == 304 and u not in loaded)
    ]
    assert not bad, bad
