"""Small wheels built for the tests: a project written to disk, then ``pip wheel``."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

#: A long description, so ``pyoco-client wheel-upload``'s strict preflight passes.
USAGE = (
    "Usage: call answer() from a python job, or run the console script "
    "<name>-answer from a command job; built by the tests of rota."
)


def build_wheel(
    tmp: Path,
    name: str,
    version: str,
    answer: str,
    *,
    deps: list[str] | None = None,
    body: str = "",
    flows: bool = False,
) -> Path:
    """Build ``<name>-<version>-py3-none-any.whl``: a package ``<name>`` whose
    ``answer()`` returns ``answer``, with a console script ``<name>-answer``
    that prints it, depending on ``deps``. With ``flows``, the package is a
    ``rota.flows`` entry point: its module defines a Pyoco flow ``<name>_flow``
    whose one task prints ``answer``."""
    project = tmp / f"src-{name}-{version}"
    package = project / name
    package.mkdir(parents=True)
    entry = f'\n[project.entry-points."rota.flows"]\n{name} = "{name}"\n' if flows else ""
    pyproject = textwrap.dedent(
        f"""
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "{name}"
        version = "{version}"
        description = "a wheel the tests built"
        readme = {{text = "{USAGE}", content-type = "text/plain"}}
        dependencies = {deps or []!r}

        [project.scripts]
        {name}-answer = "{name}:main"

        [tool.setuptools]
        packages = ["{name}"]
        """
    )
    (project / "pyproject.toml").write_text(pyproject.replace("'", '"') + entry)
    (package / "__init__.py").write_text(
        textwrap.dedent(
            f"""
            import time

            VERSION = {version!r}


            def answer(**params):
                return {answer!r}


            def slow_answer(seconds=1.0):
                time.sleep(seconds)
                return {answer!r}


            def main():
                print({answer!r})
            """
        )
        + textwrap.dedent(body)
        + (_FLOW.format(name=name, answer=answer) if flows else "")
    )
    out = tmp / "dist"
    out.mkdir(exist_ok=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--disable-pip-version-check",
            "-q",
            "-w",
            str(out),
            str(project),
        ],
        check=True,
        capture_output=True,
    )
    return out / f"{name}-{version}-py3-none-any.whl"


_FLOW = """

from pyoco import Flow, task


@task
def say():
    print({answer!r})
    return {answer!r}


{name}_flow = Flow(name="{name}_flow")
{name}_flow >> say
"""


def zip_bytes(entries: dict[str, str]) -> bytes:
    """A zip archive holding ``entries`` (name → text), for malformed wheels."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for member, text in entries.items():
            z.writestr(member, text)
    return buf.getvalue()
