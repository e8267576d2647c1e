"""Rotating a key from the dashboard: a confirmation page with the grace to choose (none,
1 h, 24 h, 7 days), the new secret shown once, and the key list and page saying until
when the previous secret works."""

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from apps.keys.hashing import secret_hash
from apps.keys.models import ApiKey
from apps.keys.selectors import api_key_get_by_hash
from apps.keys.services import api_key_revoke, api_key_rotate

SECRET = re.compile(r'value="(tg-[A-Za-z0-9_\-]+)"')


@pytest.fixture
def admin_client(client, team):
    client.force_login(team.admin)
    return client


def rotate_url(team) -> str:
    return reverse("dashboard:key-rotate", args=[team.world.acme_key.id])


def test_the_confirmation_page_offers_the_four_graces(admin_client, team):
    page = admin_client.get(rotate_url(team)).content.decode()
    offered = re.findall(r'<option value="(\d+)"', page)
    assert offered == ["0", "3600", "86400", "604800"]


def test_the_confirmation_page_preselects_no_grace(admin_client, team):
    page = admin_client.get(rotate_url(team)).content.decode()
    assert re.search(r'<option value="0" selected>', page)


def test_the_confirmation_page_rotates_nothing(admin_client, team):
    old_hash = team.world.acme_key.key_hash
    admin_client.get(rotate_url(team))
    assert ApiKey.objects.get(pk=team.world.acme_key.pk).key_hash == old_hash


def test_rotating_with_a_grace_keeps_the_key_and_shows_the_new_secret(admin_client, team):
    shown = admin_client.post(rotate_url(team), {"grace_seconds": "3600"}, follow=True)
    secret = SECRET.search(shown.content.decode()).group(1)
    assert api_key_get_by_hash(secret_hash(secret)).id == team.world.acme_key.id


def test_rotating_with_a_grace_keeps_the_old_secret_working(admin_client, team):
    old_hash = team.world.acme_key.key_hash
    admin_client.post(rotate_url(team), {"grace_seconds": "86400"})
    assert api_key_get_by_hash(old_hash).id == team.world.acme_key.id


def test_the_shown_secret_says_until_when_the_previous_one_works(admin_client, team):
    shown = admin_client.post(rotate_url(team), {"grace_seconds": "3600"}, follow=True)
    assert "the previous secret works until" in shown.content.decode()


def test_rotating_without_a_grace_refuses_the_old_secret(admin_client, team):
    old_hash = team.world.acme_key.key_hash
    admin_client.post(rotate_url(team), {"grace_seconds": "0"})
    assert api_key_get_by_hash(old_hash) is None


def test_a_grace_not_offered_is_refused_on_the_page(admin_client, team):
    response = admin_client.post(rotate_url(team), {"grace_seconds": "999999999"})
    assert "grace_seconds" in response.context["form"].errors


def test_a_grace_not_offered_rotates_nothing(admin_client, team):
    old_hash = team.world.acme_key.key_hash
    admin_client.post(rotate_url(team), {"grace_seconds": "-1"})
    assert ApiKey.objects.get(pk=team.world.acme_key.pk).key_hash == old_hash


def test_the_key_list_shows_the_previous_secret_while_in_grace(admin_client, team):
    old_prefix = team.world.acme_key.prefix
    api_key_rotate(api_key=team.world.acme_key, grace_seconds=3600)
    page = admin_client.get(reverse("dashboard:keys")).content.decode()
    assert re.search(
        rf'data-testid="previous-secret">previous secret <code>{re.escape(old_prefix)}…</code> '
        r"valid until \d{4}-\d\d-\d\d \d\d:\d\d UTC",
        page,
    )


def test_the_key_page_shows_the_previous_secret_while_in_grace(admin_client, team):
    api_key, _secret = api_key_rotate(api_key=team.world.acme_key, grace_seconds=3600)
    until = api_key.previous_valid_until.strftime("%Y-%m-%d %H:%M")
    page = admin_client.get(reverse("dashboard:key-edit", args=[api_key.id])).content.decode()
    assert f"valid until {until} UTC" in page


def test_the_key_list_says_nothing_once_the_grace_is_over(admin_client, team):
    api_key, _secret = api_key_rotate(api_key=team.world.acme_key, grace_seconds=3600)
    ApiKey.objects.filter(pk=api_key.pk).update(
        previous_valid_until=timezone.now() - timedelta(seconds=1)
    )
    page = admin_client.get(reverse("dashboard:keys")).content.decode()
    assert "previous-secret" not in page


def test_rotating_again_inside_a_grace_is_announced_on_the_confirmation_page(admin_client, team):
    api_key_rotate(api_key=team.world.acme_key, grace_seconds=3600)
    page = admin_client.get(rotate_url(team)).content.decode()
    assert 'data-testid="previous-secret-warning"' in page


def test_a_revoked_key_is_not_rotated(admin_client, team):
    api_key_revoke(api_key=team.world.acme_key)
    revoked_hash = team.world.acme_key.key_hash
    admin_client.post(rotate_url(team), {"grace_seconds": "3600"})
    assert ApiKey.objects.get(pk=team.world.acme_key.pk).key_hash == revoked_hash


def test_a_viewer_cannot_open_the_confirmation_page(client, team):
    client.force_login(team.viewer)
    assert client.get(rotate_url(team)).status_code == 403
