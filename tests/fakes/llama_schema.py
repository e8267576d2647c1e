"""The chat-completions request schema of llama-cpp-python's server, copied for the fake
upstream's llama mode (its ``llama_cpp/llama_types.py`` request TypedDicts and
``llama_cpp/server/types.py`` ``CreateChatCompletionRequest``, restricted to the chat
request; sampling fields keep their types, their descriptions are left out).

What makes it the strictest of the common servers: an assistant message's ``content`` is
a string or absent (``null`` fails), system and tool ``content`` is a string (no parts),
the roles are system, user, assistant, tool and function (no ``developer``), a function
tool needs ``parameters`` and ``response_format.type`` is text or json_object. Unknown
fields are ignored, as pydantic does by default.
"""

from typing import Any, Literal, NotRequired

from pydantic import BaseModel, Field
from typing_extensions import TypedDict  # pydantic needs it before Python 3.12

JsonType = None | int | str | bool | list[Any] | dict[str, Any]


class ChatCompletionRequestMessageContentPartText(TypedDict):
    type: Literal["text"]
    text: str


class ChatCompletionRequestMessageContentPartImageImageUrl(TypedDict):
    url: str
    detail: NotRequired[Literal["auto", "low", "high"]]


class ChatCompletionRequestMessageContentPartImage(TypedDict):
    type: Literal["image_url"]
    image_url: str | ChatCompletionRequestMessageContentPartImageImageUrl


ChatCompletionRequestMessageContentPart = (
    ChatCompletionRequestMessageContentPartText | ChatCompletionRequestMessageContentPartImage
)


class ChatCompletionRequestSystemMessage(TypedDict):
    role: Literal["system"]
    content: str | None


class ChatCompletionRequestUserMessage(TypedDict):
    role: Literal["user"]
    content: str | list[ChatCompletionRequestMessageContentPart] | None


class ChatCompletionMessageToolCallFunction(TypedDict):
    name: str
    arguments: str


class ChatCompletionMessageToolCall(TypedDict):
    id: str
    type: Literal["function"]
    function: ChatCompletionMessageToolCallFunction


class ChatCompletionRequestAssistantMessageFunctionCall(TypedDict):
    name: str
    arguments: str


class ChatCompletionRequestAssistantMessage(TypedDict):
    role: Literal["assistant"]
    content: NotRequired[str]
    tool_calls: NotRequired[list[ChatCompletionMessageToolCall]]
    function_call: NotRequired[ChatCompletionRequestAssistantMessageFunctionCall]


class ChatCompletionRequestToolMessage(TypedDict):
    role: Literal["tool"]
    content: str | None
    tool_call_id: str


class ChatCompletionRequestFunctionMessage(TypedDict):
    role: Literal["function"]
    content: str | None
    name: str


ChatCompletionRequestMessage = (
    ChatCompletionRequestSystemMessage
    | ChatCompletionRequestUserMessage
    | ChatCompletionRequestAssistantMessage
    | ChatCompletionRequestToolMessage
    | ChatCompletionRequestFunctionMessage
)


class ChatCompletionFunction(TypedDict):
    name: str
    description: NotRequired[str]
    parameters: dict[str, JsonType]


class ChatCompletionRequestFunctionCallOption(TypedDict):
    name: str


ChatCompletionRequestFunctionCall = (
    Literal["none", "auto"] | ChatCompletionRequestFunctionCallOption
)


class ChatCompletionToolFunction(TypedDict):
    name: str
    description: NotRequired[str]
    parameters: dict[str, JsonType]


class ChatCompletionTool(TypedDict):
    type: Literal["function"]
    function: ChatCompletionToolFunction


class ChatCompletionNamedToolChoiceFunction(TypedDict):
    name: str


class ChatCompletionNamedToolChoice(TypedDict):
    type: Literal["function"]
    function: ChatCompletionNamedToolChoiceFunction


ChatCompletionToolChoiceOption = Literal["none", "auto", "required"] | ChatCompletionNamedToolChoice


class ChatCompletionRequestResponseFormat(TypedDict):
    type: Literal["text", "json_object"]
    schema: NotRequired[JsonType]


class CreateChatCompletionRequest(BaseModel):
    model: str | None = None
    messages: list[ChatCompletionRequestMessage] = Field(default=[])
    functions: list[ChatCompletionFunction] | None = None
    function_call: ChatCompletionRequestFunctionCall | None = None
    tools: list[ChatCompletionTool] | None = None
    tool_choice: ChatCompletionToolChoiceOption | None = None
    max_tokens: int | None = None
    min_tokens: int = Field(default=0, ge=0)
    logprobs: bool | None = False
    top_logprobs: int | None = Field(default=None, ge=0)
    temperature: float = 0.8
    top_p: float = Field(default=0.95, ge=0.0, le=1.0)
    min_p: float = Field(default=0.05, ge=0.0, le=1.0)
    stop: str | list[str] | None = None
    stream: bool = False
    presence_penalty: float | None = Field(default=0.0, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=0.0, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    seed: int | None = None
    response_format: ChatCompletionRequestResponseFormat | None = None
    n: int | None = 1
    user: str | None = None
    top_k: int = Field(default=40, ge=0)
    repeat_penalty: float = Field(default=1.1, ge=0.0)
    logit_bias_type: Literal["input_ids", "tokens"] | None = None
    mirostat_mode: int = Field(default=0, ge=0, le=2)
    mirostat_tau: float = Field(default=5.0, ge=0.0, le=10.0)
    mirostat_eta: float = Field(default=0.1, ge=0.001, le=1.0)
    grammar: str | None = None


def chat_request_errors(body: Any) -> str | None:
    """Why llama-cpp-python's server would refuse this chat request (None: it accepts it)."""
    from pydantic import ValidationError

    try:
        CreateChatCompletionRequest.model_validate(body)
    except ValidationError as exc:
        return str(exc)
    return None
