"""A backend's deadlines and breaker as config-as-code writes them (``connect_timeout_s``,
``first_byte_timeout_s``, ``timeout_s``, ``breaker: {failures, cooldown_s}``), validated
with the offending field named, and carried into the gateway's catalog."""

import pytest

from apps.catalog.models import Backend
from apps.gateway.caches import _load_catalog
from apps.provisioning.services import ConfigError, config_apply

pytestmark = pytest.mark.django_db


def document(**backend) -> dict:
    return {
        "backends": [{"name": "vllm", "base_url": "http://127.0.0.1:9/v1", **backend}],
        "models": [{"name": "m", "deployments": [{"backend": "vllm", "upstream_model": "u"}]}],
    }


def test_a_backend_has_no_first_byte_deadline_unless_configured():
    config_apply(document=document())
    assert Backend.objects.get(name="vllm").first_byte_timeout_s is None


def test_a_backends_breaker_defaults_to_three_failures():
    config_apply(document=document())
    assert Backend.objects.get(name="vllm").breaker_failures == 3


def test_a_backends_breaker_defaults_to_a_thirty_second_cooldown():
    config_apply(document=document())
    assert Backend.objects.get(name="vllm").breaker_cooldown_s == 30.0


def test_config_sets_the_first_byte_deadline():
    config_apply(document=document(first_byte_timeout_s=2.5))
    assert Backend.objects.get(name="vllm").first_byte_timeout_s == 2.5


def test_config_sets_the_breakers_failures():
    config_apply(document=document(breaker={"failures": 5}))
    assert Backend.objects.get(name="vllm").breaker_failures == 5


def test_config_sets_the_breakers_cooldown():
    config_apply(document=document(breaker={"failures": 3, "cooldown_s": 12}))
    assert Backend.objects.get(name="vllm").breaker_cooldown_s == 12.0


def test_removing_the_breaker_from_the_file_restores_the_defaults():
    config_apply(document=document(breaker={"failures": 7, "cooldown_s": 5}))
    config_apply(document=document())
    assert Backend.objects.get(name="vllm").breaker_failures == 3


@pytest.mark.parametrize(
    ("backend", "field"),
    [
        ({"breaker": {"failures": 0}}, r"backends\[0\]\.breaker\.failures"),
        ({"breaker": {"failures": 2.5}}, r"backends\[0\]\.breaker\.failures"),
        ({"breaker": {"failures": "3"}}, r"backends\[0\]\.breaker\.failures"),
        ({"breaker": {"cooldown_s": 0}}, r"backends\[0\]\.breaker\.cooldown_s"),
        ({"breaker": {"cooldown_s": 99999}}, r"backends\[0\]\.breaker\.cooldown_s"),
        ({"breaker": {"failure": 3}}, r"backends\[0\]\.breaker\.failure"),
        ({"breaker": 3}, r"backends\[0\]\.breaker"),
        ({"first_byte_timeout_s": 0}, r"backends\[0\]\.first_byte_timeout_s"),
        ({"first_byte_timeout_s": -1}, r"backends\[0\]\.first_byte_timeout_s"),
        ({"timeout_s": 0}, r"backends\[0\]\.timeout_s"),
        ({"connect_timeout_s": 10**6}, r"backends\[0\]\.connect_timeout_s"),
    ],
)
def test_config_refuses_an_invalid_value_naming_its_field(backend, field):
    with pytest.raises(ConfigError, match=field):
        config_apply(document=document(**backend))


def test_the_catalog_carries_the_first_byte_deadline_to_its_deployments():
    config_apply(document=document(first_byte_timeout_s=1.5))
    (deployment,) = _load_catalog().by_name["m"].deployments
    assert deployment.first_byte_timeout_s == 1.5


def test_the_catalog_carries_the_breaker_to_its_deployments():
    config_apply(document=document(breaker={"failures": 4, "cooldown_s": 9}))
    (deployment,) = _load_catalog().by_name["m"].deployments
    assert (deployment.breaker_failures, deployment.breaker_cooldown_s) == (4, 9.0)
