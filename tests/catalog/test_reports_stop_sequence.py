"""Backend.reports_stop_sequence as config-as-code sets it and the gateway's catalog reads it."""

import pytest

from apps.catalog.models import Backend
from apps.gateway.caches import _load_catalog
from apps.provisioning.services import ConfigError, config_apply

pytestmark = pytest.mark.django_db


def document(**backend_extra) -> dict:
    return {
        "backends": [
            {"name": "vllm", "base_url": "http://127.0.0.1:9/v1", **backend_extra},
        ],
        "models": [{"name": "m", "deployments": [{"backend": "vllm", "upstream_model": "u"}]}],
    }


def test_backend_does_not_report_stop_sequences_unless_configured_to():
    config_apply(document=document())
    assert Backend.objects.get(name="vllm").reports_stop_sequence is False


def test_config_sets_that_the_backend_reports_stop_sequences():
    config_apply(document=document(reports_stop_sequence=True))
    assert Backend.objects.get(name="vllm").reports_stop_sequence is True


def test_config_refuses_a_flag_that_is_not_a_boolean():
    with pytest.raises(ConfigError, match=r"backends\[0\]\.reports_stop_sequence"):
        config_apply(document=document(reports_stop_sequence="yes"))


def test_gateway_catalog_carries_the_flag_to_the_deployment():
    config_apply(document=document(reports_stop_sequence=True))
    (deployment,) = _load_catalog().by_name["m"].deployments
    assert deployment.reports_stop_sequence is True
