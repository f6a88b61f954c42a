"""Issue 5: the operator's ``mailforge token create|list|revoke`` command line, against
the sandbox's database; a token revoked there fails on the daemon's next request."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

pytestmark = pytest.mark.stack


def _cli(sandbox: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailforge", "--config",
                           sandbox.info["config_path"], "token", *args],
                          capture_output=True, text=True, timeout=60)


async def test_token_cli_create_list_revoke(sandbox: Any, api: Any, unique_domain: str) -> None:
    # A restriction may name only the account's own domains (issue 9).
    r = _cli(sandbox, "create", "--name", "cli-made", "--permissions", "read",
             "--domains", unique_domain, "--json")
    assert r.returncode == 2 and "domains[0]" in r.stderr, r.stderr
    assert (await api.post("/v1/domains/connect", {"domains": [unique_domain]}))[0] == 201
    r = _cli(sandbox, "create", "--name", "cli-made", "--permissions", "read",
             "--domains", unique_domain, "--expires-in", "3600", "--json")
    assert r.returncode == 0, r.stderr
    made = json.loads(r.stdout)
    client = api.with_token(made["token"])
    assert (await client.get("/v1/domains"))[0] == 200
    r = _cli(sandbox, "list", "--json")
    assert r.returncode == 0, r.stderr
    listed = {t["id"]: t for t in json.loads(r.stdout)["tokens"]}
    assert listed[made["id"]]["domains"] == [unique_domain]
    assert listed[made["id"]]["expires_at"] is not None
    assert made["token"] not in r.stdout  # secrets are shown once, at creation
    r = _cli(sandbox, "revoke", made["id"])
    assert r.returncode == 0, r.stderr
    assert (await client.get("/v1/domains"))[0] == 401
    r = _cli(sandbox, "revoke", made["id"])
    assert r.returncode == 1 and "no live token" in r.stderr
    r = _cli(sandbox, "create", "--name", "x", "--permissions", "root")
    assert r.returncode == 2
