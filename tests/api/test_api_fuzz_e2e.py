"""Schema-driven fuzzing (schemathesis) of the management API against the real server
process: no input, valid or not, may produce a 5xx. Bounded: at most 30 examples per
operation, the tenant-scoped endpoints with a valid admin token and the staff endpoints
with a staff session."""

import os
import secrets
import subprocess
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.test import Client

from tests.api.api_support import clear_signin_throttle, org_make
from tests.conftest import BIN

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

MAX_EXAMPLES = "30"


@pytest.fixture
def fuzz_org(transactional_db, redis_url):
    clear_signin_throttle()
    return org_make()


def schemathesis(gateway: str, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """Run the CLI in ``cwd`` (a temporary folder: it keeps a .schemathesis cache there)."""
    command = [
        str(BIN / "st"),
        "run",
        f"{gateway}/api/schema/",
        "--checks",
        "not_a_server_error",
        "--max-examples",
        MAX_EXAMPLES,
        "--phases",
        "examples,coverage,fuzzing",
        # One worker: hypothesis parses lambda sources with ast.parse, which is not
        # thread-safe on CPython 3.11 (SystemError "AST constructor recursion depth").
        "--workers",
        "1",
        "--seed",
        "7",
        "--generation-database",
        "none",
        "--generation-with-security-parameters",
        "false",
        "--request-timeout",
        "20",
        "--max-failures",
        "10",
        "--no-color",
        *args,
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=540)


def _assert_clean(result: subprocess.CompletedProcess, gateway_process) -> None:
    report = result.stdout[-6000:] + result.stderr[-2000:]
    assert result.returncode == 0, report + "\n--- server log ---\n" + gateway_process.log()
    assert "Internal Server Error" not in gateway_process.log()


def test_tenant_endpoints_with_an_admin_token_never_5xx(
    fuzz_org, gateway, gateway_process, tmp_path
):
    result = schemathesis(
        gateway,
        tmp_path,
        "--header",
        f"Authorization: Bearer {fuzz_org.acme_token}",
        "--exclude-path-regex",
        "^/api/v1/(staff/|admin-tokens/\\{token_id\\}/revoke)",
    )
    _assert_clean(result, gateway_process)


def _session_headers(username: str) -> list[str]:
    client = Client()
    client.force_login(User.objects.get(username=username))
    session = client.cookies["sessionid"].value
    csrf = secrets.token_hex(16)  # 32 characters: a valid unmasked CSRF secret
    return [
        "--header",
        f"Cookie: sessionid={session}; csrftoken={csrf}",
        "--header",
        f"X-CSRFToken: {csrf}",
    ]


def test_owner_endpoints_with_an_owner_session_never_5xx(
    fuzz_org, gateway, gateway_process, tmp_path
):
    result = schemathesis(
        gateway,
        tmp_path,
        *_session_headers("olivia"),
        "--include-path-regex",
        "^/api/v1/(members|audit-events)",
    )
    _assert_clean(result, gateway_process)


def test_staff_endpoints_with_a_staff_session_never_5xx(
    fuzz_org, gateway, gateway_process, tmp_path
):
    result = schemathesis(
        gateway, tmp_path, *_session_headers("stella"), "--include-path-regex", "^/api/v1/staff/"
    )
    _assert_clean(result, gateway_process)
