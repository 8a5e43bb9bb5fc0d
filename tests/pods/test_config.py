"""The pods config: the seed's example, expansion, includes, and errors that
name the file, the task and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from rota.pods.config import Mode, PodProtocol, load_config, loads_config
from rota.pods.errors import PodConfigError

FIXTURES = Path(__file__).parent / "fixtures"


def test_the_seed_example_loads_unchanged() -> None:
    config = load_config(FIXTURES / "seed_example.toml", environ={})
    (task,) = config.tasks
    assert task.name == "worker"
    assert task.protocol is PodProtocol.MICLOW_STDIO
    assert task.command == "uv"
    assert task.args == ("run", "python3", "worker.py")
    assert task.subscribe_topics == ("work.queue", "work.priority")
    assert task.desired_instances == 3
    assert task.mode is Mode.ROUND_ROBIN
    assert task.stdout_topic == "worker.stdout"
    assert task.stderr_topic == "worker.stderr"
    assert task.view_stdout is False and task.view_stderr is False


def test_every_key(tmp_path: Path) -> None:
    text = """
[[tasks]]
protocol = "MiclowStdIO"
task_name = "full"
command = "${PY}"
args = ["${MICLOW_CONFIG_DIR}/x.py", "${MISSING-fallback}", "${EMPTY:-empty-default}", "${EMPTY-kept}", "$${LITERAL}"]
working_directory = "sub"
environment_vars = { A = "1", B = 2, C = true, D = "${HOME_ISH}" }
stdout_topic = "out"
stderr_topic = "err"
subscribe_topics = ["a", "b.c", "a"]
private_response_topics = ["a.result"]
view_stdout = true
view_stderr = "${VIEW:-false}"

[tasks.lifecycle]
desired_instances = 2
mode = "broadcast"
"""
    path = tmp_path / "pods.toml"
    path.write_text(text)
    env = {"PY": "/usr/bin/python3", "EMPTY": "", "HOME_ISH": "/home/x"}
    (t,) = load_config(path, environ=env).tasks
    assert t.command == "/usr/bin/python3"
    assert t.args == (f"{tmp_path}/x.py", "fallback", "empty-default", "", "${LITERAL}")
    assert t.working_directory == tmp_path / "sub"
    assert dict(t.environment_vars) == {"A": "1", "B": "2", "C": "true", "D": "/home/x"}
    assert (t.stdout_topic, t.stderr_topic) == ("out", "err")
    assert t.subscribe_topics == ("a", "b.c")
    assert t.private_response_topics == ("a.result",)
    assert (t.view_stdout, t.view_stderr) == (True, False)
    assert (t.desired_instances, t.mode) == (2, Mode.BROADCAST)


def test_system_topics_may_be_private_responses() -> None:
    """miclow's examples list system.* topics among the answers a task gets."""
    config = loads_config(
        TASK + 'private_response_topics = ["system.taskstatus", "answers"]\n',
        path="/etc/pods.toml",
        environ={},
    )
    assert config.tasks[0].private_response_topics == ("system.taskstatus", "answers")


def test_miclow_spelling_environment_is_accepted() -> None:
    (t,) = loads_config(
        '[[tasks]]\ntask_name = "a"\ncommand = "x"\nenvironment = { K = "v" }\n', environ={}
    ).tasks
    assert dict(t.environment_vars) == {"K": "v"}


def test_includes_are_relative_and_read_once(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "main.toml").write_text(
        'include_paths = ["sub/a.toml", "${MICLOW_CONFIG_DIR}/b.toml"]\n'
        '[[tasks]]\ntask_name = "main"\ncommand = "x"\n'
    )
    (tmp_path / "sub" / "a.toml").write_text(
        'include_paths = ["../b.toml"]\n'
        '[[tasks]]\ntask_name = "a"\ncommand = "x"\nworking_directory = "${MICLOW_CONFIG_DIR}"\n'
    )
    (tmp_path / "b.toml").write_text('[[tasks]]\ntask_name = "b"\ncommand = "x"\n')
    config = load_config(tmp_path / "main.toml", environ={})
    assert [t.name for t in config.tasks] == ["main", "a", "b"]
    assert config.task("a").working_directory == tmp_path / "sub"
    assert len(config.files) == 3


def test_interactive_needs_no_command() -> None:
    (t,) = loads_config(
        '[[tasks]]\nprotocol = "Interactive"\ntask_name = "console"\n', environ={}
    ).tasks
    assert t.protocol is PodProtocol.INTERACTIVE


def error_of(text: str, environ: dict[str, str] | None = None) -> PodConfigError:
    with pytest.raises(PodConfigError) as info:
        loads_config(text, path="/etc/pods.toml", environ=environ or {})
    return info.value


TASK = '[[tasks]]\ntask_name = "w"\ncommand = "x"\n'


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        (TASK + TASK, "task_name", "duplicate"),
        ('[[tasks]]\ntask_name = "system-x"\ncommand = "x"\n', "task_name", "may not start"),
        ('[[tasks]]\ncommand = "x"\n', "task_name", "required"),
        ('[[tasks]]\ntask_name = "w"\n', "command", "required"),
        (TASK + 'protocol = "gRPC"\n', "protocol", "unknown protocol"),
        (TASK + "args = [1]\n", "args", "list of strings"),
        (TASK + 'colour = "red"\n', "colour", "unknown key"),
        (TASK + 'subscribe_topics = ["system.idle"]\n', "subscribe_topics", "reserved"),
        (TASK + 'subscribe_topics = [""]\n', "subscribe_topics", "non-empty"),
        (TASK + "view_stdout = 3\n", "view_stdout", "true or false"),
        (TASK + 'command2 = "${NOPE}"\n', "command2", "unknown key"),
        (TASK + 'args = ["${NOPE}"]\n', "args", "${NOPE} is not set"),
        (
            TASK + 'subscribe_topics = ["a"]\nprivate_response_topics = ["a"]\n',
            "private_response_topics",
            "also in subscribe_topics",
        ),
        (
            TASK + "[[tasks.lifecycle]]\ndesired_instances = 0\n",
            "lifecycle.desired_instances",
            ">= 1",
        ),
        (TASK + '[[tasks.lifecycle]]\nmode = "random"\n', "lifecycle.mode", "unknown mode"),
        (TASK + "[[tasks.lifecycle]]\nreplicas = 2\n", "lifecycle.replicas", "unknown key"),
        (
            TASK + "[[tasks.lifecycle]]\ndesired_instances = 1\n[[tasks.lifecycle]]\n",
            "lifecycle",
            "one [[tasks.lifecycle]]",
        ),
    ],
)
def test_errors_name_file_task_and_key(text: str, key: str, words: str) -> None:
    err = error_of(text)
    assert err.file == "/etc/pods.toml"
    assert err.key == key
    assert words in str(err)
    assert str(err).startswith("/etc/pods.toml: ")
    if "task_name = " in text and key != "task_name":
        assert err.task == "w" and "task 'w'" in str(err)


def test_top_level_errors() -> None:
    assert "invalid TOML" in str(error_of("[[tasks]\n"))
    assert "unknown key(s) functions" in str(error_of(TASK + "[[functions]]\nname = 'f'\n"))
    assert "no [[tasks]]" in str(error_of(""))
    err = error_of('include_paths = ["nope.toml"]\n' + TASK)
    assert err.key == "include_paths" and "nope.toml" in str(err)


def test_only_one_interactive_task() -> None:
    one = '[[tasks]]\nprotocol = "Interactive"\ntask_name = "{}"\n'
    err = error_of(one.format("a") + one.format("b"))
    assert err.task == "b" and err.key == "protocol"


def test_missing_file() -> None:
    with pytest.raises(PodConfigError, match="no such file"):
        load_config("/nonexistent/pods.toml")
