"""The pods config file: the seed's TOML (``[[tasks]]`` with ``[[tasks.lifecycle]]``).

Read with :mod:`tomllib`; no I/O beyond reading the files. Every string value
(inside lists and tables too) is expanded once at load time:

- ``${VAR}``           the environment variable; an error if it is unset
- ``${VAR-default}``   ``default`` when VAR is unset
- ``${VAR:-default}``  ``default`` when VAR is unset or empty
- ``${MICLOW_CONFIG_DIR}`` (or ``${ROTA_CONFIG_DIR}``) the directory of the file the
  value is written in
- ``$${``              a literal ``${``

``include_paths`` (top level) lists more files, relative to the including file;
each is read once. Errors name the file, the task and the key.
"""

from __future__ import annotations

import enum
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rota.pods.errors import InvalidTopic, PodConfigError
from rota.pods.protocol import SYSTEM_PREFIX, check_topic


class PodProtocol(enum.StrEnum):
    #: A child process speaking MiclowStdIO on stdin/stdout.
    MICLOW_STDIO = "MiclowStdIO"
    #: The operator's terminal: lines typed on the host's stdin are published
    #: (parsed like a pod's stdout); messages to the task are printed.
    INTERACTIVE = "Interactive"


class Mode(enum.StrEnum):
    #: One idle instance gets each message, in rotation; the rest wait in the
    #: task's queue.
    ROUND_ROBIN = "round_robin"
    #: Every instance gets every message (each when it is idle).
    BROADCAST = "broadcast"


@dataclass(frozen=True)
class Lifecycle:
    desired_instances: int = 1
    mode: Mode = Mode.ROUND_ROBIN


@dataclass(frozen=True)
class TaskSpec:
    """One ``[[tasks]]`` entry, expanded and checked."""

    name: str
    protocol: PodProtocol = PodProtocol.MICLOW_STDIO
    command: str = ""
    args: tuple[str, ...] = ()
    working_directory: Path | None = None
    environment_vars: Mapping[str, str] = field(default_factory=dict)
    stdout_topic: str = ""
    stderr_topic: str = ""
    subscribe_topics: tuple[str, ...] = ()
    private_response_topics: tuple[str, ...] = ()
    view_stdout: bool = False
    view_stderr: bool = False
    lifecycle: Lifecycle = Lifecycle()
    #: The file the task was defined in.
    source: Path | None = None

    def __post_init__(self) -> None:
        if not self.stdout_topic:
            object.__setattr__(self, "stdout_topic", f"{self.name}.stdout")
        if not self.stderr_topic:
            object.__setattr__(self, "stderr_topic", f"{self.name}.stderr")

    @property
    def mode(self) -> Mode:
        return self.lifecycle.mode

    @property
    def desired_instances(self) -> int:
        return self.lifecycle.desired_instances


@dataclass(frozen=True)
class PodsConfig:
    tasks: tuple[TaskSpec, ...]
    #: Every file read, the main one first.
    files: tuple[Path, ...] = ()

    def task(self, name: str) -> TaskSpec:
        for t in self.tasks:
            if t.name == name:
                return t
        raise KeyError(name)


TASK_KEYS = frozenset(
    {
        "protocol",
        "task_name",
        "command",
        "args",
        "working_directory",
        "environment_vars",
        "stdout_topic",
        "stderr_topic",
        "subscribe_topics",
        "private_response_topics",
        "view_stdout",
        "view_stderr",
        "lifecycle",
    }
)
#: Other spellings seen in miclow's own examples.
TASK_ALIASES = {"environment": "environment_vars"}
LIFECYCLE_KEYS = frozenset({"desired_instances", "mode"})
TOP_KEYS = frozenset({"tasks", "include_paths"})
CONFIG_DIR_VARS = ("MICLOW_CONFIG_DIR", "ROTA_CONFIG_DIR")

_VAR = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}")


def expand(text: str, environ: Mapping[str, str], config_dir: Path) -> str:
    """Expand ``${...}`` in ``text``. Raises ``KeyError(name)`` for an unset
    variable without a default."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$${":
            return "${"
        name, op, default = m.group(1), m.group(2), m.group(3)
        if name in CONFIG_DIR_VARS:
            return str(config_dir)
        value = environ.get(name)
        if op == ":-" and not value:
            return default
        if op == "-" and value is None:
            return default
        if value is None:
            raise KeyError(name)
        return value

    return _VAR.sub(sub, text) if "$" in text else text


class _Loader:
    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.files: list[Path] = []
        self.tasks: list[TaskSpec] = []
        self.origin: dict[str, Path] = {}

    def load(self, path: Path, *, included_from: Path | None = None) -> None:
        path = path.expanduser()
        try:
            resolved = path.resolve(strict=True)
        except (OSError, RuntimeError):
            if included_from is not None:
                raise PodConfigError(
                    f"cannot read included file {path}",
                    file=str(included_from),
                    key="include_paths",
                ) from None
            raise PodConfigError(f"cannot read {path}: no such file") from None
        if resolved in self.files:
            return  # included twice (a diamond): its tasks are already here
        self.files.append(resolved)
        try:
            text = resolved.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PodConfigError(f"cannot read: {exc}", file=str(path)) from None
        self.load_text(text, resolved)

    def load_text(self, text: str, path: Path) -> None:
        name = str(path)
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise PodConfigError(f"invalid TOML: {exc}", file=name) from None
        unknown = set(raw) - TOP_KEYS
        if unknown:
            raise PodConfigError(
                f"unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(TOP_KEYS))}",
                file=name,
            )
        config_dir = path.parent
        includes = raw.get("include_paths", [])
        if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
            raise PodConfigError("must be a list of strings", file=name, key="include_paths")
        tasks = raw.get("tasks", [])
        if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
            raise PodConfigError("must be [[tasks]] tables", file=name, key="tasks")
        for entry in tasks:
            spec = self.task(entry, name, config_dir)
            if spec.name in self.origin:
                raise PodConfigError(
                    f"duplicate task name; first defined in {self.origin[spec.name]}",
                    file=name,
                    task=spec.name,
                    key="task_name",
                )
            if spec.protocol is PodProtocol.INTERACTIVE:
                other = [t.name for t in self.tasks if t.protocol is PodProtocol.INTERACTIVE]
                if other:
                    raise PodConfigError(
                        f"only one Interactive task can own the terminal; {other[0]!r} already does",
                        file=name,
                        task=spec.name,
                        key="protocol",
                    )
            self.origin[spec.name] = path
            self.tasks.append(spec)
        for inc in includes:
            try:
                target = expand(inc, self.environ, config_dir)
            except KeyError as exc:
                raise PodConfigError(
                    f"${{{exc.args[0]}}} is not set", file=name, key="include_paths"
                ) from None
            p = Path(target).expanduser()
            self.load(p if p.is_absolute() else config_dir / p, included_from=path)

    def task(self, entry: dict[str, Any], file: str, config_dir: Path) -> TaskSpec:
        raw_name = entry.get("task_name")
        task = raw_name if isinstance(raw_name, str) else ""

        def fail(key: str, message: str) -> PodConfigError:
            return PodConfigError(message, file=file, task=task, key=key)

        def value(v: Any, key: str) -> Any:
            if isinstance(v, str):
                try:
                    return expand(v, self.environ, config_dir)
                except KeyError as exc:
                    name = exc.args[0]
                    raise fail(
                        key, f"${{{name}}} is not set (give a default: ${{{name}:-...}})"
                    ) from None
            if isinstance(v, list):
                return [value(i, key) for i in v]
            if isinstance(v, dict):
                return {k: value(i, f"{key}.{k}") for k, i in v.items()}
            return v

        entry = dict(entry)
        for alias, key in TASK_ALIASES.items():
            if alias in entry:
                if key in entry:
                    raise fail(alias, f"give either {alias} or {key}, not both")
                entry[key] = entry.pop(alias)
        unknown = set(entry) - TASK_KEYS
        if unknown:
            raise fail(
                ", ".join(sorted(unknown)),
                f"unknown key; known: {', '.join(sorted(TASK_KEYS))}",
            )
        e = {k: value(v, k) for k, v in entry.items()}

        name = e.get("task_name")
        if not isinstance(name, str) or not name.strip():
            raise fail("task_name", "required: a non-empty string")
        task = name
        if name.startswith("system"):
            raise fail("task_name", "may not start with 'system' (reserved for system commands)")
        if "\n" in name or "\r" in name:
            raise fail("task_name", "may not contain a line break")

        try:
            protocol = PodProtocol(e.get("protocol", PodProtocol.MICLOW_STDIO))
        except ValueError:
            raise fail(
                "protocol",
                f"unknown protocol {e.get('protocol')!r}; use one of "
                + ", ".join(p.value for p in PodProtocol),
            ) from None

        command = e.get("command", "")
        if not isinstance(command, str):
            raise fail("command", "must be a string")
        if protocol is PodProtocol.MICLOW_STDIO and not command.strip():
            raise fail("command", "required for protocol MiclowStdIO")

        args = e.get("args", [])
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise fail("args", "must be a list of strings")

        wd = e.get("working_directory")
        working_directory: Path | None = None
        if wd is not None:
            if not isinstance(wd, str) or not wd:
                raise fail("working_directory", "must be a non-empty string")
            working_directory = Path(wd).expanduser()
            if not working_directory.is_absolute():
                working_directory = config_dir / working_directory

        env = e.get("environment_vars", {})
        if not isinstance(env, dict):
            raise fail("environment_vars", "must be a table of NAME = value")
        environment: dict[str, str] = {}
        for k, v in env.items():
            if isinstance(v, bool):
                v = "true" if v else "false"
            if not isinstance(v, (str, int, float)):
                raise fail(f"environment_vars.{k}", "must be a string or a number")
            environment[k] = str(v)

        def topic(key: str, v: Any) -> str:
            if not isinstance(v, str):
                raise fail(key, "must be a string")
            try:
                check_topic(v)
            except InvalidTopic as exc:
                raise fail(key, exc.message) from None
            # A task may not take system commands' topics as its own, but it may
            # name them among the answers it receives (miclow's own examples do).
            if v.startswith(SYSTEM_PREFIX) and key != "private_response_topics":
                raise fail(key, f"topic {v!r} is reserved (system commands)")
            return v

        def topics(key: str) -> tuple[str, ...]:
            v = e.get(key, [])
            if not isinstance(v, list):
                raise fail(key, "must be a list of topic names")
            return tuple(dict.fromkeys(topic(key, t) for t in v))

        subscribe = topics("subscribe_topics")
        private = topics("private_response_topics")
        both = set(subscribe) & set(private)
        if both:
            raise fail(
                "private_response_topics",
                f"{', '.join(sorted(both))} also in subscribe_topics; a topic is one or the other",
            )
        stdout_topic = topic("stdout_topic", e["stdout_topic"]) if "stdout_topic" in e else ""
        stderr_topic = topic("stderr_topic", e["stderr_topic"]) if "stderr_topic" in e else ""

        def flag(key: str) -> bool:
            v = e.get(key, False)
            if isinstance(v, bool):
                return v
            if isinstance(v, str) and v.strip().lower() in ("true", "1", "yes", "on"):
                return True
            if isinstance(v, str) and v.strip().lower() in ("false", "0", "no", "off", ""):
                return False
            raise fail(key, f"must be true or false, got {v!r}")

        lifecycle = self.lifecycle(e.get("lifecycle"), fail)
        if protocol is PodProtocol.INTERACTIVE and lifecycle.desired_instances != 1:
            raise fail("lifecycle.desired_instances", "an Interactive task has exactly 1 instance")

        return TaskSpec(
            name=name,
            protocol=protocol,
            command=command,
            args=tuple(args),
            working_directory=working_directory,
            environment_vars=environment,
            stdout_topic=stdout_topic,
            stderr_topic=stderr_topic,
            subscribe_topics=subscribe,
            private_response_topics=private,
            view_stdout=flag("view_stdout"),
            view_stderr=flag("view_stderr"),
            lifecycle=lifecycle,
            source=Path(file),
        )

    @staticmethod
    def lifecycle(raw: Any, fail: Any) -> Lifecycle:
        if raw is None:
            return Lifecycle()
        # The seed writes [[tasks.lifecycle]] (an array of one table); a plain
        # [tasks.lifecycle] table means the same.
        if isinstance(raw, list):
            if len(raw) != 1 or not isinstance(raw[0], dict):
                raise fail("lifecycle", f"give one [[tasks.lifecycle]] table, not {len(raw)}")
            raw = raw[0]
        if not isinstance(raw, dict):
            raise fail("lifecycle", "must be a table")
        unknown = set(raw) - LIFECYCLE_KEYS
        if unknown:
            raise fail(
                "lifecycle." + ", ".join(sorted(unknown)),
                f"unknown key; known: {', '.join(sorted(LIFECYCLE_KEYS))}",
            )
        n = raw.get("desired_instances", 1)
        if isinstance(n, str) and n.strip().isdigit():
            n = int(n)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise fail("lifecycle.desired_instances", f"must be an integer >= 1, got {n!r}")
        mode = raw.get("mode", Mode.ROUND_ROBIN)
        try:
            mode = Mode(mode)
        except ValueError:
            raise fail(
                "lifecycle.mode",
                f"unknown mode {mode!r}; use one of {', '.join(m.value for m in Mode)}",
            ) from None
        return Lifecycle(desired_instances=n, mode=mode)


def load_config(
    path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None
) -> PodsConfig:
    """Read ``path`` and the files it includes. Raises :class:`PodConfigError`."""
    loader = _Loader(os.environ if environ is None else environ)
    loader.load(Path(path))
    if not loader.tasks:
        raise PodConfigError("no [[tasks]] defined", file=str(path))
    return PodsConfig(tasks=tuple(loader.tasks), files=tuple(loader.files))


def loads_config(
    text: str,
    *,
    path: str | os.PathLike[str] = "<string>",
    environ: Mapping[str, str] | None = None,
) -> PodsConfig:
    """Like :func:`load_config` for TOML text; ``path`` names it in errors and
    gives ``${MICLOW_CONFIG_DIR}`` and relative includes their directory."""
    loader = _Loader(os.environ if environ is None else environ)
    p = Path(path)
    loader.load_text(text, p.absolute())
    if not loader.tasks:
        raise PodConfigError("no [[tasks]] defined", file=str(path))
    return PodsConfig(tasks=tuple(loader.tasks), files=tuple(loader.files))
