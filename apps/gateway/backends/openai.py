"""OpenAI-compatible servers: OpenAI, vLLM, llama.cpp, Ollama, LiteLLM, …"""

from apps.gateway.backends.base import OPENAI, BackendAdapter, register


class OpenAIAdapter(BackendAdapter):
    kind = "openai"
    label = "OpenAI-compatible"
    speaks = OPENAI
    apis = frozenset({"embeddings", "responses", "tokenize"})

    def auth_headers(self, credential: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {credential}"}


ADAPTER = register(OpenAIAdapter())
