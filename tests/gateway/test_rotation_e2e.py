"""Key rotation across two gateway server processes, through the official openai SDK and
the Celery worker's ledger: inside the grace both secrets work on both servers as one key,
after it both servers refuse the old secret within a second, with no message at its end."""

import time

import httpx
import openai
import pytest

from apps.keys.models import ApiKey
from apps.keys.services import api_key_rotate
from tests.conftest import openai_client, start_gateway, usage_record, wait_until

pytestmark = pytest.mark.e2e

MESSAGES = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def second_gateway(server_env):
    process = start_gateway(server_env, name="gateway2")
    yield f"http://127.0.0.1:{process.port}"
    process.stop()


def ask(gateway: str, secret: str) -> str:
    """A chat completion through the openai SDK; its request id."""
    raw = openai_client(gateway, secret).chat.completions.with_raw_response.create(
        model="test-model", messages=MESSAGES
    )
    return raw.headers["x-request-id"]


def status(gateway: str, secret: str) -> int:
    response = httpx.post(
        gateway + "/v1/chat/completions",
        json={"model": "test-model", "messages": MESSAGES},
        headers={"Authorization": f"Bearer {secret}"},
        timeout=10,
    )
    return response.status_code


def grace_end_read(gateway: str, secret: str) -> str | None:
    """When this secret stops working, as the server's cached entry for it says."""
    response = httpx.get(gateway + "/v1/key", headers={"Authorization": f"Bearer {secret}"})
    return response.json()["data"]["secret_valid_until"]


def rotate(grace_seconds: int) -> tuple[ApiKey, str]:
    return api_key_rotate(api_key=ApiKey.objects.get(name="main"), grace_seconds=grace_seconds)


def test_inside_the_grace_both_secrets_on_both_servers_land_on_one_key_in_the_ledger(
    gateway, second_gateway, seed, upstream, celery_worker
):
    before = ask(gateway, seed.secret)
    api_key, new = rotate(60)
    during = [ask(server, s) for server in (gateway, second_gateway) for s in (seed.secret, new)]
    keys = {usage_record(request_id).api_key_id for request_id in [before, *during]}
    assert keys == {api_key.id}


def test_after_the_grace_both_servers_refuse_the_old_secret_within_a_second(
    gateway, second_gateway, seed, upstream
):
    servers = [gateway, second_gateway]
    for server in servers:
        assert status(server, seed.secret) == 200  # cached before the rotation
    api_key, _new = rotate(3)
    until = api_key.previous_valid_until.timestamp()
    # Each server has the entry loaded after the rotation's message, the grace's end in it;
    # nothing is published when the grace ends.
    for server in servers:
        wait_until(lambda s=server: grace_end_read(s, seed.secret), timeout=1.5)
    wait_until(
        lambda: all(status(server, seed.secret) == 401 for server in servers),
        timeout=max(until - time.time(), 0) + 1.0,
    )


def test_after_the_grace_the_sdk_sees_the_old_secret_as_an_authentication_error(
    gateway, second_gateway, seed, upstream
):
    api_key, _new = rotate(1)
    until = api_key.previous_valid_until.timestamp()
    wait_until(
        lambda: status(second_gateway, seed.secret) == 401,
        timeout=max(until - time.time(), 0) + 1.0,
    )
    with pytest.raises(openai.AuthenticationError):
        ask(second_gateway, seed.secret)


def test_after_the_grace_the_new_secret_works_on_both_servers(
    gateway, second_gateway, seed, upstream
):
    api_key, new = rotate(1)
    until = api_key.previous_valid_until.timestamp()
    wait_until(lambda: status(gateway, seed.secret) == 401, max(until - time.time(), 0) + 1.0)
    assert [status(server, new) for server in (gateway, second_gateway)] == [200, 200]


def test_without_a_grace_both_servers_refuse_the_old_secret_within_a_second(
    gateway, second_gateway, seed, upstream
):
    servers = [gateway, second_gateway]
    for server in servers:
        assert status(server, seed.secret) == 200  # cached before the rotation
    rotate(0)
    wait_until(lambda: all(status(server, seed.secret) == 401 for server in servers), 1.0)
