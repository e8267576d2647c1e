"""The project's platform/ folder never shadows the standard library's platform module."""

import platform
import subprocess
import sys

import httpx
import pytest

from tests.conftest import ROOT


def test_stdlib_platform_in_pytest():
    assert platform.system() == "Linux"
    assert platform.__file__.startswith(sys.base_prefix) or "python3" in platform.__file__


def test_project_configuration_is_reachable_as_apps_platform():
    import apps.platform.settings as project_settings

    assert project_settings.ROOT_URLCONF == "apps.platform.urls"


def test_stdlib_platform_in_a_django_process():
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django; django.setup(); import platform, apps.platform.asgi; print(platform.system())",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"DJANGO_SETTINGS_MODULE": "apps.platform.settings", "PATH": "/usr/bin:/bin"},
    )
    assert out.stdout.strip() == "Linux", out.stderr


@pytest.mark.e2e
def test_stdlib_platform_in_the_web_server(gateway):
    # The server process imported uvicorn (which uses platform) and serves requests.
    assert httpx.get(gateway + "/healthz").json()["platform"] == "Linux"


@pytest.mark.e2e
def test_stdlib_platform_in_a_celery_worker(celery_worker):
    from apps.platform.celery_app import app

    result = app.send_task("platform.system")
    # No result backend: the worker logs what it ran.
    from tests.conftest import wait_until

    wait_until(lambda: "platform.system() = Linux" in celery_worker.log(), timeout=30)
    assert result.id
