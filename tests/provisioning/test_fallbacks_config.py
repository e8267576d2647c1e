"""A model's fallbacks in config-as-code: set in order (also on a model defined later in
the file), validated naming the field, removed with the field."""

import pytest

from apps.catalog.models import Model
from apps.provisioning.services import ConfigError, config_apply

pytestmark = pytest.mark.django_db


def document(**fields) -> dict:
    return {
        "models": [
            {"name": "main", **fields},
            {"name": "backup"},
            {"name": "long"},
        ]
    }


def main() -> Model:
    return Model.objects.get(name="main")


def test_fallbacks_are_set_in_order_even_on_models_defined_later():
    config_apply(document=document(fallbacks=["long", "backup"]))
    assert main().fallbacks == ["long", "backup"]


def test_context_window_fallbacks_are_set():
    config_apply(document=document(context_window_fallbacks=["long"]))
    assert main().context_window_fallbacks == ["long"]


def test_a_second_apply_changes_nothing():
    config_apply(document=document(fallbacks=["backup"], context_window_fallbacks=["long"]))
    again = config_apply(document=document(fallbacks=["backup"], context_window_fallbacks=["long"]))
    assert again.changes == []


def test_removing_the_field_removes_the_fallbacks():
    config_apply(document=document(fallbacks=["backup"]))
    config_apply(document=document())
    assert main().fallbacks == []


def test_an_unknown_fallback_is_refused_naming_the_field():
    with pytest.raises(ConfigError, match=r"^models\[0\]\.fallbacks: unknown model 'nowhere'$"):
        config_apply(document=document(fallbacks=["nowhere"]))


def test_a_fallback_on_itself_is_refused_naming_the_field():
    with pytest.raises(ConfigError, match=r"^models\[0\]\.context_window_fallbacks: 'main'"):
        config_apply(document=document(context_window_fallbacks=["main"]))


def test_a_fallback_that_is_not_a_list_is_refused_naming_the_field():
    with pytest.raises(ConfigError, match=r"^models\[0\]\.fallbacks: must be a list"):
        config_apply(document=document(fallbacks="backup"))


def test_an_invalid_file_changes_nothing():
    with pytest.raises(ConfigError):
        config_apply(document=document(fallbacks=["backup", "backup"]))
    assert not Model.objects.filter(name="main").exists()
