"""Time from a wheel upload to the first run that uses the new version.

Starts `rota up --no-worker` and N `rota worker` processes (all tagged
``bench``, one warm python child each) in a temporary directory, builds R+1
versions of a small package with `pip wheel`, uploads version 1 and waits until
every worker has installed it. Then, per round, it uploads the next version and
measures:

- first run: upload → the first python run (``benchpkg:answer``, submitted one
  after another through the API) that returns the new version;
- all workers: upload → every worker's registry entry lists the new version.

    python bench/wheels_sync.py --workers 10 --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.conftest import start_stack, stop_stack, wait_for  # noqa: E402
from tests.wheels_helpers import build_wheel  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--sync-seconds",
        type=float,
        default=10.0,
        help="ROTA_WHEEL_SYNC_SECONDS of the workers (the timer; uploads also wake them)",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="rota-bench-wheels-") as raw:
        tmp = Path(raw)
        wheels = [
            build_wheel(tmp, "benchpkg", f"{v}.0", f"v{v}") for v in range(1, args.rounds + 2)
        ]
        stack = start_stack(tmp, "--no-worker")
        env = {
            **stack.env(),
            "ROTA_WHEEL_SYNC_SECONDS": str(args.sync_seconds),
            "ROTA_PYTHON_POOL_SIZE": "1",
            "ROTA_PYOCO_POOL_SIZE": "0",
        }
        procs = []
        client = stack.client
        try:
            for i in range(args.workers):
                log = open(tmp / f"worker-{i}.log", "ab")  # noqa: SIM115
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "rota", "worker", "--node-id", f"b{i}"]
                        + ["--tags", "bench", "--roles", "execute" if i else "execute,lead"],
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        cwd=tmp,
                        start_new_session=True,
                    )
                )
            pids = {p.pid for p in procs}

            def versions() -> list[str]:
                items = client.get("/workers").json()["items"]
                out = []
                for w in items:
                    if w["pid"] not in pids:
                        continue
                    installed = (w.get("wheel_sync") or {}).get("installed_wheels") or []
                    out.append(installed[0]["package_version"] if installed else "")
                return out

            wait_for(lambda: len(versions()) == args.workers, timeout=300)
            r = client.post(
                "/jobs",
                json={"name": "bench-answer", "kind": "python", "target": "benchpkg:answer"}
                | {"tags": ["bench"]},
            )
            assert r.status_code == 201, r.text

            def upload(path: Path) -> float:
                started = time.monotonic()
                r = client.post(
                    "/wheels",
                    files={"wheel": (path.name, path.read_bytes())},
                    data={"tags": "bench"},
                )
                assert r.status_code == 200, r.text
                return started

            def run() -> str:
                r = client.post("/runs", json={"job": "bench-answer"})
                run_id = r.json()["run_id"]
                body = wait_for(
                    lambda: (
                        b
                        if (b := client.get(f"/runs/{run_id}").json())["state"]
                        in {"SUCCEEDED", "FAILED"}
                        else None
                    ),
                    timeout=60,
                    interval=0.02,
                )
                return str(body.get("result"))

            upload(wheels[0])
            wait_for(lambda: versions() == ["1.0"] * args.workers, timeout=300)
            first_runs, all_workers = [], []
            for k, path in enumerate(wheels[1:], start=2):
                started = upload(path)
                while run() != f"v{k}":
                    pass
                first_runs.append(time.monotonic() - started)
                wait_for(
                    lambda k=k: versions() == [f"{k}.0"] * args.workers,
                    timeout=300,
                    interval=0.05,
                )
                all_workers.append(time.monotonic() - started)
                print(
                    f"round {k - 1}: first run with v{k} after {first_runs[-1]:.2f}s, "
                    f"all {args.workers} workers after {all_workers[-1]:.2f}s",
                    flush=True,
                )
            print(
                f"{args.workers} workers, {args.rounds} rounds: upload → first run with the new "
                f"version median {statistics.median(first_runs):.2f}s max {max(first_runs):.2f}s; "
                f"→ every worker installed median {statistics.median(all_workers):.2f}s "
                f"max {max(all_workers):.2f}s"
            )
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
            stop_stack(stack)
    return 0


if __name__ == "__main__":
    sys.exit(main())
