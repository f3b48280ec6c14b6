"""The `fowm` command: core verbs here, ROS verbs found through the ``fowm.commands`` entry point
group (as ros2cli finds its verbs), and a clear message when the ROS package is not installed."""

from __future__ import annotations

import ast
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from fowm_core.jobs import cli

COUNT = EntryPoint("count", "builtins:len", cli.COMMAND_GROUP)   # returns len(argv)


def test_cli_names_neither_the_ros_package_nor_rclpy() -> None:
    tree = ast.parse(Path(cli.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not {m for m in imported if m.split(".")[0] in {"fowm", "rclpy"}}, imported


def test_an_installed_verb_gets_the_arguments_after_its_name(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "entry_points", lambda group: [COUNT] if group == cli.COMMAND_GROUP
                        else [])
    assert cli.main(["count", "--a", "b", "-c"]) == 3


def test_core_verbs_win_over_an_entry_point_of_the_same_name(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clash = EntryPoint("eval", "builtins:len", cli.COMMAND_GROUP)
    monkeypatch.setattr(cli, "entry_points", lambda group: [clash, COUNT])
    assert set(cli.installed_commands(cli.CORE)) == {"count"}


def test_without_the_ros_package_run_says_how_to_install_it(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cli, "entry_points", lambda group: [])
    assert cli.main(["run", "--checkpoint", "x.safetensors"]) == 2
    err = capsys.readouterr().err
    assert "'run'" in err and "make setup" in err and "colcon build" in err


def test_help_lists_the_installed_verbs(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cli, "entry_points", lambda group: [COUNT])
    with pytest.raises(SystemExit):
        cli.main(["-h"])
    out = capsys.readouterr().out
    assert "count" in out and "installed verbs (fowm.commands): count" in out


def test_the_ros_package_registers_run_and_demo_and_they_resolve() -> None:
    """`make setup` installs ros2_ws/src/fowm (pip -e): its verbs load as callables."""
    installed = cli.installed_commands(cli.CORE)
    assert {"run", "demo"} <= set(installed)
    # fowm.roles:main takes --role robot|learner (docs/two_hosts.md) and hands the rest to
    # fowm.bringup:main, the one-host `fowm run`.
    assert installed["run"].value == "fowm.roles:main"
    assert installed["demo"].value == "fowm.demo:main"
    for name in ("run", "demo"):
        assert callable(installed[name].load())


@pytest.mark.parametrize(("verb", "usage"), [("run", "usage: fowm run"),
                                              ("demo", "usage: fowm demo")])
def test_ros_verbs_take_their_own_help(verb: str, usage: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main([verb, "-h"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(usage)
    if verb == "demo":
        assert "--online-episodes" in out and "--eval-episodes" in out   # its size options


def test_keygen_writes_a_private_key_once(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from fowm_core.runtime import trust

    path = tmp_path / "keys" / "lab.key"
    assert cli.main(["keygen", str(path)]) == 0
    assert (path.stat().st_mode & 0o777) == 0o600 and len(trust.load_key(path)) == 32
    assert "trust.key_file" in capsys.readouterr().out
    before = path.read_bytes()
    assert cli.main(["keygen", str(path)]) != 0                   # never overwritten
    assert path.read_bytes() == before and "exists already" in capsys.readouterr().err


def test_run_with_a_role_takes_the_two_host_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["run", "--role", "robot", "-h"])
    assert exit_.value.code == 0
    assert "--store" in capsys.readouterr().out
    assert cli.main(["run", "--role", "learner", "--checkpoint", "x", "--bag-dir", "y"]) == 2
    assert "--key-file" in capsys.readouterr().err
