"""Config loading: defaults, overrides, and errors that name the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailforge import config


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "mailforge.yaml"
    p.write_text(text)
    return p


def test_defaults_load_without_file() -> None:
    cfg = config.load(None, env={})
    assert cfg.api.port == 8080
    assert cfg.backend.type == "postfix_dovecot"


def test_example_config_in_repo_is_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "config" / "mailforge.yaml"
    cfg = config.load(example, env={})
    assert cfg.source == str(example)


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        ("api:\n  port: eighty\n", "api.port", "integer"),
        ("api:\n  port: 70000\n", "api.port", "TCP port"),
        ("api:\n  prot: 1\n", "api.prot", "unknown option"),
        ("worker:\n  concurrency: -1\n", "worker.concurrency", "0"),
        ("passwords:\n  scheme: md5\n", "passwords.scheme", "one of"),
        ("backend:\n  postfix_dovecot:\n    state_dir: relative/dir\n",
         "backend.postfix_dovecot.state_dir", "absolute"),
        ("api: [1, 2]\n", "api", "mapping"),
        ("- just\n- a list\n", "(top level)", "mapping"),
        ("api:\n  port: [\n", "line", "YAML"),
        # Delivery events say which mailbox to scan: only a loopback listener.
        ("mail:\n  events_listen: 0.0.0.0\n", "mail.events_listen", "loopback"),
        ("mail:\n  events_listen: 192.0.2.1\n", "mail.events_listen", "loopback"),
        ("mail:\n  events_listen: localhost.example\n", "mail.events_listen", "loopback"),
        ("mail:\n  events_port: 70000\n", "mail.events_port", "TCP port"),
        ("mail:\n  sweep_rate: 0\n", "mail", "sweep_rate"),
    ],
)
def test_bad_config_names_file_and_key(tmp_path: Path, text: str, key: str,
                                       fragment: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(config.ConfigError) as info:
        config.load(path, env={})
    err = info.value
    assert err.source == str(path)
    assert err.key.startswith(key)
    assert fragment in err.problem
    assert str(path) in str(err)


def test_missing_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match="cannot read"):
        config.load(tmp_path / "absent.yaml", env={})


def test_environment_overrides_secrets(tmp_path: Path) -> None:
    path = write(tmp_path, "database:\n  dsn: postgresql:///file\napi:\n  port: 9000\n")
    cfg = config.load(path, env={"MAILFORGE_DATABASE_DSN": "postgresql://env/db",
                                 "MAILFORGE__API__PORT": "9100",
                                 "MAILFORGE_MASTER_KEY": "k"})
    assert cfg.database.dsn == "postgresql://env/db"
    assert cfg.api.port == 9100
    assert cfg.secrets.master_key == "k"


def test_environment_override_is_validated(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError) as info:
        config.load(None, env={"MAILFORGE__API__PORT": "nope"})
    assert info.value.key == "api.port"
