"""Example Pyoco flows and tasks (``ROTA_FLOW_MODULES=rota.contrib.example_flows``),
for walkthroughs and tests. See docs/flows.md."""

from __future__ import annotations

import time

from pyoco import Flow, task


@task
def extract(count: int = 3) -> list[int]:
    return list(range(1, count + 1))


@task
def transform(extract: list[int]) -> list[int]:
    return [x * 10 for x in extract]


@task
def load(transform: list[int]) -> dict[str, int]:
    print(f"loaded {len(transform)} rows")
    return {"rows": len(transform), "total": sum(transform)}


#: Three tasks in a row: extract >> transform >> load.
etl = Flow(name="etl")
etl >> extract >> transform >> load


@task
def prepare() -> str:
    return "ready"


@task
def explode(prepare: str) -> None:
    raise ValueError(f"boom after {prepare}")


@task
def never() -> None:
    """Not reached: the task before it fails."""


#: Its second task fails.
failing = Flow(name="failing")
failing >> prepare >> explode >> never


@task
def nap(seconds: float = 0.5) -> float:
    time.sleep(seconds)
    return seconds


@task
def wake() -> str:
    return "awake"


#: A first task that sleeps ``seconds`` (0.5 by default), then one more.
sleepy = Flow(name="sleepy")
sleepy >> nap >> wake
