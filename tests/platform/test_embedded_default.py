"""The embedded default (`make serve`): SQLite, in-process Redis stand-ins and the demo
backend, with no Postgres or Redis configured; the official SDKs talk to it."""

import os
import re
import subprocess
import sys
import time

import anthropic
import httpx
import openai
import pytest

from tests.conftest import BIN, ROOT, Process, free_port, wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "REDIS_URL"))}
    env.update(
        DATABASE_URL=f"sqlite:///{tmp_path_factory.mktemp('embedded') / 'db.sqlite3'}",
        DEMO_UPSTREAM="1",
        DJANGO_SETTINGS_MODULE="apps.platform.settings",
    )
    port = free_port()
    manage = [sys.executable, "manage.py"]
    subprocess.run(
        [*manage, "migrate", "--noinput"], cwd=ROOT, env=env, check=True, capture_output=True
    )
    setup = subprocess.run(
        [*manage, "demo_setup", "--port", str(port)],
        cwd=ROOT, env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    secret = re.search(r"Demo key \(shown once\): (tg-\S+)", setup.stdout).group(1)
    server = Process(
        "embedded",
        [str(BIN / "uvicorn"), "apps.platform.asgi:application", "--port", str(port)],
        env,
        port,
    )
    yield f"http://127.0.0.1:{port}", secret, env
    server.stop()


def _admin_token(env: dict[str, str]) -> str:
    """A management API token of the demo tenant."""
    code = (
        "from apps.tenants.models import Tenant;"
        "from apps.tenants.services import admin_token_issue;"
        "print(admin_token_issue(tenant=Tenant.objects.get(name='demo'), name='t')[1])"
    )
    made = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT, env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    return made.stdout.strip().splitlines()[-1]


def test_the_demo_key_works_with_both_sdks(embedded):
    url, secret, _env = embedded
    gpt = openai.OpenAI(base_url=url + "/v1", api_key=secret, max_retries=0)
    assert [m.id for m in gpt.models.list()] == ["tollgate-demo"]
    answer = gpt.chat.completions.create(
        model="tollgate-demo", messages=[{"role": "user", "content": "hi"}]
    )
    assert answer.choices[0].message.content.endswith("You said: hi")
    streamed = gpt.chat.completions.create(
        model="tollgate-demo", messages=[{"role": "user", "content": "a b c"}], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices).endswith(
        "a b c"
    )
    vectors = gpt.embeddings.create(model="tollgate-demo", input=["x", "y"])
    assert len(vectors.data) == 2 and len(vectors.data[0].embedding) == 8
    claude = anthropic.Anthropic(base_url=url, api_key=secret, max_retries=0)
    message = claude.messages.create(
        model="tollgate-demo", max_tokens=20, messages=[{"role": "user", "content": "hey"}]
    )
    assert message.content[0].text.endswith("You said: hey")
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url + "/v1", api_key="tg-wrong", max_retries=0).models.list()
    assert httpx.get(url + "/healthz").status_code == 200


def test_a_tagged_request_is_reported_by_its_tag(embedded):
    """SQLite has no JSON containment: the tag filter of the usage API works there too."""
    url, secret, env = embedded
    gpt = openai.OpenAI(base_url=url + "/v1", api_key=secret, max_retries=0)
    gpt.chat.completions.create(
        model="tollgate-demo",
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-tollgate-tags": "team:web"},
    )
    token = _admin_token(env)

    def tagged_requests() -> int:
        answer = httpx.get(
            url + "/api/v1/organization/usage/completions",
            params={
                "start_time": int(time.time()) - 3600,
                "bucket_width": "1h",  # read from the ledger itself
                "tags": "team:web",
                "limit": 2,
            },
            headers={"Authorization": f"Bearer {token}"},
        )
        answer.raise_for_status()
        return sum(r["num_model_requests"] for b in answer.json()["data"] for r in b["results"])

    assert wait_until(tagged_requests, timeout=30) == 1
