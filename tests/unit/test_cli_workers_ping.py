"""`rota workers ping`: what it says when it is not told which worker."""

from __future__ import annotations

from rota.cli.main import main


def test_ping_without_a_worker_or_local_says_what_to_give(capsys):
    assert main(["workers", "ping"]) == 2
    err = capsys.readouterr().err
    assert "which worker?" in err and "--local" in err


def test_ping_with_a_worker_and_local_is_refused(capsys):
    assert main(["workers", "ping", "w-1", "--local"]) == 2
    assert "not both" in capsys.readouterr().err
