"""The embedded default (`make serve`): SQLite, in-process Redis stand-ins and the demo
backend, with no Postgres or Redis configured; the official SDKs talk to it."""

import os
import re
import subprocess
import sys

import anthropic
import httpx
import openai
import pytest

from tests.conftest import BIN, ROOT, Process, free_port

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
    yield f"http://127.0.0.1:{port}", secret
    server.stop()


def test_the_demo_key_works_with_both_sdks(embedded):
    url, secret = embedded
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
