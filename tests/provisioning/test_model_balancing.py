"""A model's balancing in config-as-code: strategy and affinity_key set, validated by
field, defaulted."""

import pytest

from apps.catalog.models import Model
from apps.provisioning.services import ConfigError, config_apply

pytestmark = pytest.mark.django_db


def document(**fields) -> dict:
    return {"models": [{"name": "balanced-model", **fields}]}


def test_a_models_strategy_is_set_from_the_file():
    config_apply(document=document(strategy="least-busy"))
    assert Model.objects.get(name="balanced-model").strategy == "least-busy"


def test_a_models_affinity_key_is_set_from_the_file():
    config_apply(document=document(strategy="affinity", affinity_key="header:X-Session-Id"))
    assert Model.objects.get(name="balanced-model").affinity_key == "header:x-session-id"


def test_a_model_without_balancing_in_the_file_is_weighted():
    config_apply(document=document())
    assert Model.objects.get(name="balanced-model").strategy == "weighted"


def test_a_model_without_an_affinity_key_uses_prompt_cache_key():
    config_apply(document=document(strategy="affinity"))
    assert Model.objects.get(name="balanced-model").affinity_key == "prompt_cache_key"


def test_removing_the_strategy_from_the_file_restores_weighted():
    config_apply(document=document(strategy="latency"))
    config_apply(document=document())
    assert Model.objects.get(name="balanced-model").strategy == "weighted"


def test_a_second_apply_changes_nothing():
    config_apply(document=document(strategy="affinity", affinity_key="prefix"))
    assert config_apply(document=document(strategy="affinity", affinity_key="prefix")).changes == []


def test_an_unknown_strategy_is_refused_naming_the_field():
    with pytest.raises(ConfigError, match=r"^models\[0\]\.strategy: must be one of weighted"):
        config_apply(document=document(strategy="round-robin"))


def test_an_unknown_affinity_key_is_refused_naming_the_field():
    with pytest.raises(ConfigError, match=r"^models\[0\]\.affinity_key: must be one of"):
        config_apply(document=document(affinity_key="cookie"))


def test_a_header_affinity_key_without_a_name_is_refused_naming_the_field():
    with pytest.raises(ConfigError, match=r"^models\[0\]\.affinity_key: header:<name> needs"):
        config_apply(document=document(affinity_key="header:"))


def test_a_non_string_affinity_key_is_refused_naming_the_field():
    with pytest.raises(ConfigError, match=r"^models\[0\]\.affinity_key"):
        config_apply(document=document(affinity_key=["user"]))
