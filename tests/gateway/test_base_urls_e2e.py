"""The official SDKs configured every way the providers' docs show reach the same API.

The anthropic SDK appends "/v1/messages" (and "/v1/messages/count_tokens",
"/v1/models") to its base_url, so the ".../v1/" base_url some providers document makes
it call "/v1/v1/...": those paths answer identically. The openai SDK appends
"chat/completions" (and "models", "embeddings", "responses") to its base_url, so a
base_url of the bare host calls "/chat/completions": the API answers there too."""

import anthropic
import httpx
import openai
import pytest

pytestmark = pytest.mark.e2e

ANTHROPIC_BASES = ["", "/", "/v1", "/v1/"]
OPENAI_BASES = ["", "/", "/v1", "/v1/"]
ANTHROPIC_HEADERS = {"anthropic-version": "2023-06-01"}


def claude(gateway: str, secret: str, base: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway + base, api_key=secret, max_retries=0)


def gpt(gateway: str, secret: str, base: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway + base, api_key=secret, max_retries=0)


def hi() -> list[dict]:
    return [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("base", ANTHROPIC_BASES)
def test_anthropic_sdk_creates_a_message(gateway, seed, upstream, base):
    message = claude(gateway, seed.secret, base).messages.create(
        model="test-model", max_tokens=20, messages=hi()
    )
    assert message.content[0].text == "w0 w1 w2 w3 w4"


@pytest.mark.parametrize("base", ANTHROPIC_BASES)
def test_anthropic_sdk_streams_a_message(gateway, seed, upstream, base):
    with claude(gateway, seed.secret, base).messages.stream(
        model="test-model", max_tokens=20, messages=hi()
    ) as stream:
        assert stream.get_final_text() == "w0 w1 w2 w3 w4"


@pytest.mark.parametrize("base", ANTHROPIC_BASES)
def test_anthropic_sdk_counts_tokens(gateway, seed, upstream, base):
    count = claude(gateway, seed.secret, base).messages.count_tokens(
        model="test-model", messages=hi()
    )
    assert count.input_tokens > 0


@pytest.mark.parametrize("base", ANTHROPIC_BASES)
def test_anthropic_sdk_lists_models(gateway, seed, base):
    ids = {m.id for m in claude(gateway, seed.secret, base).models.list()}
    assert "test-model" in ids


@pytest.mark.parametrize("base", ANTHROPIC_BASES)
def test_anthropic_sdk_retrieves_a_model(gateway, seed, base):
    assert claude(gateway, seed.secret, base).models.retrieve("test-model").id == "test-model"


@pytest.mark.parametrize("base", ANTHROPIC_BASES)
def test_anthropic_sdk_sees_errors_typed(gateway, seed, base):
    with pytest.raises(anthropic.NotFoundError):
        claude(gateway, seed.secret, base).messages.create(
            model="nope", max_tokens=20, messages=hi()
        )


@pytest.mark.parametrize("base", OPENAI_BASES)
def test_openai_sdk_creates_a_chat_completion(gateway, seed, upstream, base):
    completion = gpt(gateway, seed.secret, base).chat.completions.create(
        model="test-model", messages=hi()
    )
    assert completion.choices[0].message.content == "w0 w1 w2 w3 w4"


@pytest.mark.parametrize("base", OPENAI_BASES)
def test_openai_sdk_lists_and_retrieves_models(gateway, seed, base):
    assert gpt(gateway, seed.secret, base).models.retrieve("test-model").id == "test-model"


@pytest.mark.parametrize("base", OPENAI_BASES)
def test_openai_sdk_creates_embeddings(gateway, seed, upstream, base):
    answer = gpt(gateway, seed.secret, base).embeddings.create(model="test-model", input="hi")
    assert len(answer.data) == 1


def auth(secret: str) -> dict:
    return {"Authorization": f"Bearer {secret}", **ANTHROPIC_HEADERS}


@pytest.mark.parametrize(
    "path",
    ["/v1/models", "/v1/models/test-model"],
)
@pytest.mark.parametrize("slash", ["", "/"])
@pytest.mark.parametrize("anthropic_version", [False, True])
def test_doubled_v1_answers_models_identically(gateway, seed, path, slash, anthropic_version):
    headers = auth(seed.secret) if anthropic_version else {"Authorization": f"Bearer {seed.secret}"}
    with httpx.Client(base_url=gateway, headers=headers) as http:
        plain = http.get(path)
        doubled = http.get("/v1" + path + slash)
    assert (doubled.status_code, doubled.json()) == (plain.status_code, plain.json())


@pytest.mark.parametrize(
    "path",
    ["/v1/v1/chat/completions/", "/v1/v1/messages/", "/v1/v1/messages/count_tokens/"],
)
def test_doubled_v1_with_a_trailing_slash_is_served(gateway, seed, upstream, path):
    body = {**{"model": "test-model", "messages": hi()}, "max_tokens": 5}
    r = httpx.post(gateway + path, headers=auth(seed.secret), json=body, timeout=30)
    assert r.status_code == 200


def test_doubled_v1_keeps_unknown_routes_unknown(gateway, seed):
    r = httpx.get(gateway + "/v1/v1/nothing-here", headers=auth(seed.secret))
    assert (r.status_code, r.json()["error"]["type"]) == (404, "not_found_error")


def test_a_path_merely_starting_like_v1_is_not_rewritten(gateway, seed):
    r = httpx.get(gateway + "/v1/v1models", headers=auth(seed.secret))
    assert r.status_code == 404
