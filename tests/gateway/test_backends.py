"""Backend kinds: one adapter each, registered in apps/gateway/backends/; a kind with no
adapter is never served as if it were OpenAI-compatible."""

import logging
from collections.abc import Iterator

import orjson
import pytest
from django.db import connection

from apps.catalog.models import Backend, Deployment, Model
from apps.gateway.backends import ADAPTERS, ANTHROPIC, OPENAI, adapter_for, register
from apps.gateway.backends.openai import OpenAIAdapter
from apps.keys.models import ApiKey


class ApiKeyHeaderAdapter(OpenAIAdapter):
    """A kind defined here and nowhere else: OpenAI's API, its key in an api-key header
    (as Azure OpenAI takes it)."""

    kind = "test-api-key"
    label = "Test: api-key header"

    def auth_headers(self, credential: str) -> dict[str, str]:
        return {"api-key": credential}


@pytest.fixture
def api_key_kind() -> Iterator[ApiKeyHeaderAdapter]:
    adapter = register(ApiKeyHeaderAdapter())
    yield adapter
    ADAPTERS.pop(adapter.kind)


def _chat(gateway, secret: str, model: str):
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return gateway.request(
        "POST",
        "/v1/chat/completions",
        content=orjson.dumps(body),
        headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"},
    )


def _serve_through(backend: Backend, model_name: str) -> None:
    model = Model.objects.create(name=model_name)
    Deployment.objects.create(model=model, backend=backend, upstream_model="upstream-" + model_name)
    for key in ApiKey.objects.filter(name="main"):
        key.allowed_models = [*key.allowed_models, model_name]
        key.save(update_fields=["allowed_models"])


def test_a_kind_registered_from_its_own_module_serves_requests(
    api_key_kind, seed, upstream, inprocess_gateway
):
    backend = Backend(name="keyed", kind=api_key_kind.kind, base_url=upstream.base_url)
    backend.credential = "keyed-upstream-secret"
    backend.full_clean()
    backend.save()
    _serve_through(backend, "keyed-model")
    response = _chat(inprocess_gateway, seed.secret, "keyed-model")
    assert response.status_code == 200, response.text


def test_a_registered_kind_sends_its_own_auth_headers(
    api_key_kind, seed, upstream, inprocess_gateway
):
    backend = Backend(name="keyed", kind=api_key_kind.kind, base_url=upstream.base_url)
    backend.credential = "keyed-upstream-secret"
    backend.save()
    _serve_through(backend, "keyed-model")
    _chat(inprocess_gateway, seed.secret, "keyed-model")
    (sent,) = upstream.requests()
    assert (sent["headers"].get("api-key"), sent["headers"].get("Authorization")) == (
        "keyed-upstream-secret",
        None,
    )


def _set_kind_behind_the_models_back(backend_name: str, kind: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute("UPDATE catalog_backend SET kind = %s WHERE name = %s", [kind, backend_name])


def test_a_deployment_of_an_unknown_kind_is_never_sent_a_request(seed, upstream, inprocess_gateway):
    _set_kind_behind_the_models_back("fake", "gemini")
    _chat(inprocess_gateway, seed.secret, "test-model")
    assert upstream.requests() == []


def test_a_model_served_only_by_an_unknown_kind_is_refused(seed, upstream, inprocess_gateway):
    _set_kind_behind_the_models_back("fake", "gemini")
    response = _chat(inprocess_gateway, seed.secret, "test-model")
    assert response.status_code != 200


def test_a_backend_of_an_unknown_kind_is_logged_when_the_catalog_loads(
    seed, upstream, inprocess_gateway, caplog
):
    _set_kind_behind_the_models_back("fake", "gemini")
    with caplog.at_level(logging.ERROR, logger="apps.gateway.caches"):
        _chat(inprocess_gateway, seed.secret, "test-model")
    assert any("fake" in r.getMessage() and "gemini" in r.getMessage() for r in caplog.records)


def test_other_backends_still_serve_when_one_has_an_unknown_kind(seed, upstream, inprocess_gateway):
    _set_kind_behind_the_models_back("fake", "gemini")
    response = _chat(inprocess_gateway, seed.secret, "llama-model")
    assert response.status_code == 200, response.text


# The adapters themselves -----------------------------------------------------------------


def test_an_openai_backend_takes_its_key_as_a_bearer_token():
    assert adapter_for("openai").headers("sk-1", {}) == {"Authorization": "Bearer sk-1"}


def test_an_anthropic_backend_takes_its_key_in_x_api_key_with_a_default_version():
    assert adapter_for("anthropic").headers("sk-1", {}) == {
        "anthropic-version": "2023-06-01",
        "x-api-key": "sk-1",
    }


def test_a_backends_extra_headers_override_the_default_version():
    headers = adapter_for("anthropic").headers("", {"anthropic-version": "2024-01-01"})
    assert headers == {"anthropic-version": "2024-01-01"}


def test_a_backends_credential_wins_over_an_auth_header_in_its_extra_headers():
    headers = adapter_for("openai").headers("sk-1", {"Authorization": "Bearer other"})
    assert headers["Authorization"] == "Bearer sk-1"


def test_the_two_built_in_kinds_speak_their_own_protocol():
    assert (adapter_for("openai").speaks, adapter_for("anthropic").speaks) == (OPENAI, ANTHROPIC)


def test_only_an_anthropic_backend_names_anthropic_error_types():
    error = {"type": "request_too_large", "message": "too big"}
    assert (
        adapter_for("openai").error_type(error),
        adapter_for("anthropic").error_type(error),
    ) == (
        None,
        "request_too_large",
    )


def test_an_anthropic_backend_does_not_pass_on_an_error_type_anthropic_does_not_have():
    assert adapter_for("anthropic").error_type({"type": "made_up_error"}) is None


def test_asking_for_an_unknown_kind_names_the_known_ones():
    with pytest.raises(ValueError, match="'openai'"):
        adapter_for("gemini")


def test_a_kind_speaking_a_protocol_the_gateway_does_not_implement_is_refused():
    class Gemini(OpenAIAdapter):
        kind = "test-gemini"
        speaks = "gemini"

    with pytest.raises(ValueError, match="speaks"):
        register(Gemini())


def test_a_kind_offering_an_api_its_protocol_has_no_endpoint_for_is_refused():
    class Embedder(OpenAIAdapter):
        kind = "test-embedder"
        speaks = ANTHROPIC

    with pytest.raises(ValueError, match="embeddings"):
        register(Embedder())


def test_a_kind_cannot_be_registered_twice():
    class Again(OpenAIAdapter):
        kind = "openai"

    with pytest.raises(ValueError, match="twice"):
        register(Again())


def test_a_kind_longer_than_the_database_column_is_refused():
    class Long(OpenAIAdapter):
        kind = "x" * 17

    with pytest.raises(ValueError, match="characters"):
        register(Long())
