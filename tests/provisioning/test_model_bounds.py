"""A model's budget bounds in config-as-code: set, validated by field, defaulted."""

import pytest

from apps.catalog.models import Model
from apps.provisioning.services import ConfigError, config_apply

pytestmark = pytest.mark.django_db


def document(**fields) -> dict:
    return {"models": [{"name": "bounded-model", **fields}]}


def test_a_models_budget_bounds_are_set_from_the_file():
    config_apply(document=document(max_output_tokens=8192, prompt_allowance_per_request=900))
    model = Model.objects.get(name="bounded-model")
    assert (model.max_output_tokens, model.prompt_allowance_per_request) == (8192, 900)


def test_a_model_without_bounds_in_the_file_gets_the_defaults():
    config_apply(document=document())
    model = Model.objects.get(name="bounded-model")
    assert (
        model.prompt_allowance_per_request,
        model.prompt_allowance_per_message,
        model.image_token_bound,
        model.max_output_tokens,
    ) == (512, 32, 4096, 4096)


def test_a_second_apply_changes_nothing():
    config_apply(document=document(image_token_bound=2000))
    assert config_apply(document=document(image_token_bound=2000)).changes == []


def test_a_zero_maximum_output_is_refused_naming_the_field():
    with pytest.raises(ConfigError, match=r"^models\[0\]\.max_output_tokens: must be between"):
        config_apply(document=document(max_output_tokens=0))


def test_a_fractional_allowance_is_refused_naming_the_field():
    with pytest.raises(ConfigError, match=r"models\[0\]\.prompt_allowance_per_message"):
        config_apply(document=document(prompt_allowance_per_message=1.5))
