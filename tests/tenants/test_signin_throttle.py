"""Failed sign-ins are throttled: 5 failures for a username from one IP lock that pair for
15 minutes, correct password or not; other IPs and other users are unaffected."""

from apps.core.redis import sync_client
from apps.tenants.signin import KEY_PREFIX, signin_locked

LOGIN = "/admin/login/"


def attempt(client, username: str, password: str, ip: str = "10.0.0.1"):
    return client.post(
        LOGIN + "?next=/admin/",
        {"username": username, "password": password},
        REMOTE_ADDR=ip,
    )


def signed_in(client) -> bool:
    return "_auth_user_id" in client.session


def test_five_failures_lock_the_username_from_that_ip(org, client):
    for _ in range(4):
        assert attempt(client, "stella", "wrong").status_code == 200
    assert not signin_locked(username="stella", ip="10.0.0.1")
    attempt(client, "stella", "wrong")
    assert signin_locked(username="stella", ip="10.0.0.1")
    assert signin_locked(username="STELLA ", ip="10.0.0.1")  # same user, other spelling
    # Locked: even the right password is refused.
    assert attempt(client, "stella", "pw-stella").status_code == 200
    assert not signed_in(client)
    # Another IP, another user: unaffected.
    assert attempt(client, "stella", "pw-stella", ip="10.0.0.2").status_code == 302
    assert signed_in(client)


def test_the_lock_lasts_fifteen_minutes_then_lifts(org, client):
    for _ in range(5):
        attempt(client, "stella", "wrong")
    redis = sync_client()
    [key] = list(redis.scan_iter(match=KEY_PREFIX + "*"))
    assert 890 <= redis.ttl(key) <= 900
    redis.delete(key)  # what the TTL does after 15 minutes
    assert attempt(client, "stella", "pw-stella").status_code == 302


def test_a_successful_sign_in_resets_the_count(org, client):
    for _ in range(4):
        attempt(client, "stella", "wrong")
    assert attempt(client, "stella", "pw-stella").status_code == 302
    client.logout()
    for _ in range(4):
        attempt(client, "stella", "wrong")
    assert not signin_locked(username="stella", ip="10.0.0.1")
