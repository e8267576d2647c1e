"""Security settings: headers and CSP always; secure cookies and HSTS in production."""

import json
import subprocess

import pytest

from tests.conftest import PYTHON, ROOT


def test_security_headers_and_csp_on_every_page(org, client):
    client.force_login(org.owner)
    for path in ("/admin/login/", "/api/docs/", "/api/v1/tenant"):
        response = client.get(path)
        assert response["X-Frame-Options"] == "DENY", path
        assert response["X-Content-Type-Options"] == "nosniff", path
        assert response["Referrer-Policy"] == "same-origin", path
        csp = response["Content-Security-Policy"]
        directives = dict(d.strip().split(" ", 1) for d in csp.split(";") if d.strip())
        assert directives["default-src"] == "'self'", path
        assert directives["frame-ancestors"] == "'none'" and directives["object-src"] == "'none'"
        assert "unsafe-inline" not in csp, path


def test_docs_page_inline_style_carries_the_csp_nonce(client):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    csp = response["Content-Security-Policy"]
    nonce = csp.split("'nonce-", 1)[1].split("'", 1)[0]
    html = response.content.decode()
    assert f'<style nonce="{nonce}">' in html
    assert "<script>" not in html  # the init script is a separate same-origin file
    assert "cdn" not in html.lower() and "googleapis" not in html
    script = client.get("/api/docs/?script=")
    assert script.status_code == 200 and "SwaggerUIBundle" in script.content.decode()


def test_session_cookie_is_http_only(org, client):
    response = client.post("/admin/login/", {"username": "stella", "password": "pw-stella"})
    assert response.status_code == 302
    assert response.cookies["sessionid"]["httponly"] is True
    assert response.cookies["sessionid"]["secure"] == ""  # not production


def _settings(**env) -> dict:
    code = (
        "import json, django; django.setup(); from django.conf import settings as s; "
        "print(json.dumps({n: getattr(s, n, None) for n in ("
        "'SESSION_COOKIE_SECURE','CSRF_COOKIE_SECURE','SECURE_HSTS_SECONDS',"
        "'SECURE_HSTS_INCLUDE_SUBDOMAINS','SECURE_HSTS_PRELOAD','SECURE_SSL_REDIRECT',"
        "'SECURE_PROXY_SSL_HEADER','SESSION_COOKIE_HTTPONLY','X_FRAME_OPTIONS')}))"
    )
    import os

    base = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "DEBUG"))}
    base.update(DJANGO_SETTINGS_MODULE="apps.platform.settings", **env)
    out = subprocess.run(
        [PYTHON, "-c", code], cwd=ROOT, env=base, capture_output=True, check=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_production_settings_secure_cookies_and_hsts():
    prod = _settings(
        TOLLGATE_PRODUCTION="1",
        SECURE_SSL_REDIRECT="1",
        SECURE_PROXY_SSL_HEADER="HTTP_X_FORWARDED_PROTO,https",
    )
    assert prod["SESSION_COOKIE_SECURE"] is True and prod["CSRF_COOKIE_SECURE"] is True
    assert prod["SECURE_HSTS_SECONDS"] >= 31536000
    assert prod["SECURE_HSTS_INCLUDE_SUBDOMAINS"] is True and prod["SECURE_HSTS_PRELOAD"] is True
    assert prod["SECURE_SSL_REDIRECT"] is True
    assert prod["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert prod["SESSION_COOKIE_HTTPONLY"] is True and prod["X_FRAME_OPTIONS"] == "DENY"
    dev = _settings()
    assert not dev["SESSION_COOKIE_SECURE"] and not dev["SECURE_HSTS_SECONDS"]
    debug = _settings(TOLLGATE_PRODUCTION="1", DEBUG="1")
    assert not debug["SESSION_COOKIE_SECURE"]


@pytest.mark.timeout(60)
def test_deploy_check_passes_in_production():
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "DEBUG"))}
    env.update(
        DJANGO_SETTINGS_MODULE="apps.platform.settings",
        TOLLGATE_PRODUCTION="1",
        SECURE_SSL_REDIRECT="1",
        SECRET_KEY="x" * 20 + "-production-secret-key-with-enough-entropy-1234567890",
    )
    result = subprocess.run(
        [PYTHON, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
