"""``schemathesis run`` with every check on, the security checks among them, against the served
API: the public one and, with an admin token, the admin one.

``ignored_auth`` sends each admin operation again without the token and with a wrong one and
wants a 401; ``negative_data_rejection`` sends what the schemas forbid (wrong types, unknown
fields, out-of-range values, in bodies, queries and paths) and wants a 4xx, never a 2xx or a
500; ``unsupported_method`` wants a 405 with ``Allow`` for methods the document does not list;
``missing_required_header``, ``use_after_free`` and ``ensure_resource_availability`` check the
resources' lives. Left out: ``positive_data_acceptance``, since a schema-valid body can still
be refused by a business rule (a number nobody may call is a 422).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy.orm import Session, sessionmaker

from cbserver import admin_tokens
from tests.browser import live_server

pytestmark = pytest.mark.usefixtures("acme")

RUN_SECONDS = 600


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    # The contract is the same on every database; SQLite keeps thousands of calls quick.
    return f"sqlite:///{tmp_path / 'cbserver.sqlite3'}"


def schemathesis_command() -> str:
    beside_python = Path(sys.executable).with_name("schemathesis")
    found = str(beside_python) if beside_python.exists() else shutil.which("schemathesis")
    assert found, "schemathesis (a dev dependency) is installed"
    return found


def test_schemathesis_finds_no_security_problem(
    app: Flask, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    with sessions() as session:
        secret = admin_tokens.create_token(session, "schemathesis")[1]
    config = tmp_path / "schemathesis.toml"
    # A refusal of what the schemas forbid may also be a 413: a body over 16 KiB is never read.
    config.write_text(
        "[checks.negative_data_rejection]\n"
        "expected-statuses = [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429]\n"
    )

    events = tmp_path / "events.ndjson"
    with live_server(app) as base_url:
        result = subprocess.run(
            [
                schemathesis_command(),
                "--config-file",
                str(config),
                "run",
                f"{base_url}/api/v1/openapi.json",
                "--checks",
                "all",
                "--exclude-checks",
                "positive_data_acceptance",
                "--header",
                f"Authorization: Bearer {secret}",
                "--phases",
                "examples,coverage,fuzzing,stateful",
                "--max-examples",
                "10",
                "--seed",
                "6",
                "--workers",
                "1",
                "--generation-database",
                "none",
                "--suppress-health-check",
                "all",
                "--no-color",
                "--report",
                "ndjson",
                "--report-ndjson-path",
                str(events),
            ],
            capture_output=True,
            text=True,
            # Its crash files and caches go to the working directory: not into the checkout.
            cwd=tmp_path,
            timeout=RUN_SECONDS,
            check=False,
        )

    summary = result.stdout[-6000:] + result.stderr[-2000:]
    assert result.returncode == 0, summary
    outcomes = check_outcomes(events)
    assert outcomes.get("failure", Counter()) == Counter(), summary
    # The security checks did run, on many cases each (and none was merely skipped).
    passed = outcomes["success"]
    for check in ("ignored_auth", "negative_data_rejection", "not_a_server_error"):
        assert passed[check] >= 10, (check, passed)


def check_outcomes(events: Path) -> dict[str, Counter[str]]:
    """status -> check name -> how many cases, from the run's NDJSON event stream."""
    outcomes: dict[str, Counter[str]] = {}
    for line in events.read_text().splitlines():
        event = json.loads(line)
        finished = event.get("ScenarioFinished")
        if finished is None:
            continue
        # A skipped scenario records no checks.
        for results in finished["recorder"].get("checks", {}).values():
            for result in results:
                outcomes.setdefault(result["status"], Counter())[result["name"]] += 1
    return outcomes
