"""OpenAI's Responses API (``POST /v1/responses``) on top of Chat Completions. No Django.

The gateway's backends speak Chat Completions, so a Responses request is translated to
one and the answer (or its stream) back: text and image input, instructions, function
tools and their outputs, structured output (``text.format``), sampling and length
limits. What needs server-side state or OpenAI's own tools is refused with a 400 naming
the field: ``previous_response_id``, ``conversation``, ``background``, built-in tools
(web search, file search, …) and ``store: true`` retrieval (responses are not stored).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

from apps.gateway.protocol.openai import RequestInvalid, UpstreamChatChunks, check_fields
from apps.gateway.protocol.sse import named_event
from apps.gateway.protocol.usage import from_openai, to_responses

_UNSUPPORTED = {
    "previous_response_id": "Stored responses are not kept here: send the whole input.",
    "conversation": "Conversations are not kept here: send the whole input.",
    "background": "Background responses are not supported.",
    "prompt": "Stored prompt templates are not supported.",
}
_PASSED_ON = ("temperature", "top_p", "user", "parallel_tool_calls", "seed", "top_logprobs")
# The fields read, passed on or echoed in the Response, and their JSON types.
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "temperature": (int, float),
    "top_p": (int, float),
    "user": (str,),
    "parallel_tool_calls": (bool,),
    "seed": (int,),
    "top_logprobs": (int,),
    "instructions": (str,),
    "max_output_tokens": (int,),
    "stream": (bool,),
    "store": (bool,),
    "metadata": (dict,),
    "reasoning": (dict,),
    "text": (dict,),
    "tools": (list,),
    "tool_choice": (str, dict),
}
_FIELD_RANGES = {
    "temperature": (0, 2),
    "top_p": (0, 1),
    "top_logprobs": (0, 20),
}
_ROLES = {"user", "system", "developer", "assistant"}


def _content_parts(content: Any, where: str) -> str | list[dict]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise RequestInvalid(f"'{where}.content' must be a string or an array.", where)
    parts: list[dict] = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text") and isinstance(part.get("text"), str):
            parts.append({"type": "text", "text": part["text"]})
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            image = {"url": part["image_url"]}
            if part.get("detail") in ("low", "high", "auto"):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        else:
            raise RequestInvalid(
                f"'{where}.content[{i}]' must be input_text, output_text or input_image "
                "(with an image_url).",
                f"{where}.content",
            )
    return parts


def _portable_content(role: str, content: str | list[dict]) -> str | list[dict]:
    """Text-only content as one string: llama-cpp-python takes parts only from users,
    and Ollama turns each part into a message of its own."""
    if isinstance(content, str):
        return content
    if role == "assistant":  # what the model said, split into parts: text only
        return "".join(p.get("text", "") for p in content)
    if any(p["type"] != "text" for p in content):
        return content
    return "\n".join(p["text"] for p in content)


def _call_arguments(arguments: Any) -> str:
    # Ollama parses the arguments of replayed calls as JSON: never an empty string.
    if isinstance(arguments, str) and arguments.strip():
        return arguments
    if isinstance(arguments, dict):
        return orjson.dumps(arguments).decode()
    return "{}"


def _tool_output(output: Any) -> str:
    """A function_call_output as text (tool messages are strings on llama-cpp-python)."""
    if isinstance(output, str):
        return output
    if isinstance(output, list) and all(
        isinstance(p, dict) and isinstance(p.get("text"), str) for p in output
    ):
        return "\n".join(p["text"] for p in output)
    return orjson.dumps(output).decode()


def _input_messages(value: Any) -> list[dict]:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise RequestInvalid("'input' must be a string or a non-empty array of items.", "input")
    messages: list[dict] = []
    for i, item in enumerate(value):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise RequestInvalid(f"'{where}' must be an object.", "input")
        kind = item.get("type", "message")
        role = item.get("role")
        if kind == "message" and isinstance(role, str) and role in _ROLES:
            role = "system" if item["role"] == "developer" else item["role"]
            content = _portable_content(role, _content_parts(item.get("content"), where))
            messages.append({"role": role, "content": content})
        elif kind == "function_call":
            _check_strings(item, where, ("call_id", "id", "arguments"), required=("name",))
            call = {
                "id": str(item.get("call_id") or item.get("id") or f"call_{i}"),
                "type": "function",
                "function": {
                    "name": str(item.get("name") or ""),
                    "arguments": _call_arguments(item.get("arguments")),
                },
            }
            last = messages[-1] if messages else None
            if last and last["role"] == "assistant":
                # The text the model said before its calls and the calls: one turn.
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif kind == "function_call_output":
            _check_strings(item, where, (), required=("call_id",))
            output = item.get("output")
            if not isinstance(output, str | list):
                raise RequestInvalid(
                    f"'{where}.output' must be a string or an array of parts.", "input"
                )
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": str(item.get("call_id") or ""),
                    "content": _tool_output(item.get("output")),
                }
            )
        elif kind == "reasoning":
            # Agents (Codex) send earlier reasoning back; a chat backend has no field for
            # it, and the answer it led to is in the items that follow.
            continue
        else:
            raise RequestInvalid(
                f"'{where}' must be a message (role user, system, developer or assistant), "
                "a function_call, a function_call_output or a reasoning item.",
                "input",
            )
    return messages


def _check_strings(item: dict, where: str, optional: tuple, required: tuple = ()) -> None:
    for field in (*optional, *required):
        value = item.get(field)
        if not isinstance(value, str) and (value is not None or field in required):
            raise RequestInvalid(f"'{where}.{field}' must be a string.", "input")


def _tools(tools: Any) -> list[dict]:
    if not isinstance(tools, list):
        raise RequestInvalid("'tools' must be an array.", "tools")
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            raise RequestInvalid(f"'tools[{i}]': only function tools are available here.", "tools")
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise RequestInvalid(f"'tools[{i}].name' is required.", "tools")
        for field, kind in (("description", str), ("parameters", dict), ("strict", bool)):
            if tool.get(field) is not None and not isinstance(tool[field], kind):
                raise RequestInvalid(f"'tools[{i}].{field}' has the wrong type.", "tools")
        function = {"name": tool["name"]}
        for field in ("description", "parameters", "strict"):
            if tool.get(field) is not None:
                function[field] = tool[field]
        # llama-cpp-python requires parameters; this is what "none" means in JSON Schema.
        function.setdefault("parameters", {"type": "object", "properties": {}})
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: Any) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    if (
        isinstance(choice, dict)
        and choice.get("type") == "function"
        and isinstance(choice.get("name"), str)
        and choice["name"]
    ):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise RequestInvalid("'tool_choice' must be auto, none, required or a function.", "tool_choice")


def _response_format(text: Any) -> dict | None:
    if not isinstance(text, dict):
        raise RequestInvalid("'text' must be an object.", "text")
    fmt = text.get("format")
    if fmt is None or (isinstance(fmt, dict) and fmt.get("type") == "text"):
        return None
    if isinstance(fmt, dict) and fmt.get("type") == "json_object":
        return {"type": "json_object"}
    if (
        isinstance(fmt, dict)
        and fmt.get("type") == "json_schema"
        and isinstance(fmt.get("schema"), dict)
        and isinstance(fmt.get("name", ""), str)
        and isinstance(fmt.get("strict", False), bool | None)
    ):
        schema = {"name": str(fmt.get("name") or "response"), "schema": fmt["schema"]}
        if fmt.get("strict") is not None:
            schema["strict"] = bool(fmt["strict"])
        return {"type": "json_schema", "json_schema": schema}
    raise RequestInvalid("'text.format' must be text, json_object or json_schema.", "text.format")


def responses_to_chat_request(body: Any) -> dict[str, Any]:
    """The Chat Completions request for a Responses request (RequestInvalid: a 400)."""
    if not isinstance(body, dict):
        raise RequestInvalid("The request body must be a JSON object.")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise RequestInvalid("'model' is required and must be a string.", "model")
    for field, message in _UNSUPPORTED.items():
        if body.get(field) not in (None, False):
            raise RequestInvalid(message, field)
    check_fields(body, _FIELD_TYPES, _FIELD_RANGES)
    metadata = body.get("metadata")
    if metadata is not None and not all(isinstance(v, str) for v in metadata.values()):
        raise RequestInvalid("The values of 'metadata' must be strings.", "metadata")
    reasoning = body.get("reasoning")
    if reasoning is not None:
        for field in ("effort", "summary"):
            if not isinstance(reasoning.get(field, ""), str | None):
                raise RequestInvalid(f"'reasoning.{field}' must be a string.", f"reasoning.{field}")
    messages = _input_messages(body.get("input"))
    instructions = body.get("instructions")
    if instructions is not None:
        messages.insert(0, {"role": "system", "content": instructions})
    chat: dict[str, Any] = {"model": body["model"], "messages": messages}
    limit = body.get("max_output_tokens")
    if limit is not None:
        if limit < 1:
            raise RequestInvalid(
                "'max_output_tokens' must be a positive integer.", "max_output_tokens"
            )
        chat["max_tokens"] = limit
    for field in _PASSED_ON:
        if body.get(field) is not None:
            chat[field] = body[field]
    if "top_logprobs" in chat:
        chat["logprobs"] = True  # Chat Completions refuses top_logprobs without it
    if body.get("tools"):
        chat["tools"] = _tools(body["tools"])
    if body.get("tool_choice") is not None:
        chat["tool_choice"] = _tool_choice(body["tool_choice"])
    if body.get("text") is not None and (fmt := _response_format(body["text"])) is not None:
        chat["response_format"] = fmt
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and isinstance(reasoning.get("effort"), str):
        chat["reasoning_effort"] = reasoning["effort"]
    if body.get("stream") is True:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat


# --------------------------------------------------------------------------- answers


def response_usage(usage: dict | None) -> dict[str, Any] | None:
    mapped = from_openai(usage)
    return None if mapped is None else to_responses(mapped)


def response_shell(response_id: str, model: str, request: dict, created_at: int) -> dict:
    """A Response object without output: the fields that echo the request."""
    tools = request.get("tools") or []
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": "in_progress",
        "error": None,
        "incomplete_details": None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "model": model,
        "output": [],
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": False,
        "temperature": request.get("temperature"),
        "text": request.get("text") or {"format": {"type": "text"}},
        "tool_choice": request.get("tool_choice", "auto"),
        "tools": tools if isinstance(tools, list) else [],
        "top_p": request.get("top_p"),
        "truncation": "disabled",
        "usage": None,
        "user": request.get("user"),
        "metadata": request.get("metadata") or {},
    }


def _complete_json(text: str) -> bool:
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True


def _cut_by_max_tokens(finish_reason: str | None, output: list[dict], usage: Any, limit) -> bool:
    """Whether the answer stopped at the token limit. Servers that parse tool calls
    (vLLM, llama-cpp-python) say "tool_calls" also when the limit cut one off: a call
    whose arguments break off, with the whole budget used, was cut too."""
    if finish_reason == "length":
        return True
    if not isinstance(limit, int):
        return False
    if not any(i["type"] == "function_call" and not _complete_json(i["arguments"]) for i in output):
        return False
    completion = usage.get("completion_tokens") if isinstance(usage, dict) else None
    return not isinstance(completion, int) or completion >= limit


def _finish(response: dict, finish_reason: str | None, usage: Any = None) -> None:
    """The response's status from how the chat completion ended (and the last item's,
    which was cut off when the answer was)."""
    output = response["output"]
    if _cut_by_max_tokens(finish_reason, output, usage, response.get("max_output_tokens")):
        response["status"] = "incomplete"
        response["incomplete_details"] = {"reason": "max_output_tokens"}
        if output:
            output[-1]["status"] = "incomplete"
    elif finish_reason == "content_filter":
        response["status"] = "incomplete"
        response["incomplete_details"] = {"reason": "content_filter"}
    else:
        response["status"] = "completed"


def message_item(item_id: str, text: str, status: str = "completed") -> dict:
    return {
        "type": "message",
        "id": item_id,
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}]
        if status == "completed"
        else [],
    }


def function_call_item(
    item_id: str, call_id: str, name: str, arguments: str, status: str = "completed"
) -> dict:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def chat_to_response(answer: dict, shell: dict, estimated_usage: dict | None = None) -> dict:
    """A (non-stream) chat completion as a Response (its first choice).

    ``estimated_usage`` (chat-completions shape) is shown when the answer has none."""
    response = dict(shell)
    choice = (answer.get("choices") or [{}])[0]
    message = choice.get("message") if isinstance(choice, dict) else None
    message = message if isinstance(message, dict) else {}
    output: list[dict] = []
    rid = shell["id"].removeprefix("resp_")
    thinking = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(thinking, str) and thinking:
        output.append(
            {
                "type": "reasoning",
                "id": f"rs_{rid}",
                "summary": [],
                "content": [{"type": "reasoning_text", "text": thinking}],
            }
        )
    if isinstance(message.get("content"), str) and message["content"]:
        output.append(message_item(f"msg_{rid}", message["content"]))
    elif message.get("refusal"):
        item = message_item(f"msg_{rid}", "")
        item["content"] = [{"type": "refusal", "refusal": str(message["refusal"])}]
        output.append(item)
    for i, call in enumerate(message.get("tool_calls") or ()):
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            output.append(
                function_call_item(
                    f"fc_{rid}_{i}",
                    str(call.get("id") or f"call_{rid}_{i}"),
                    str(function.get("name") or ""),
                    str(function.get("arguments") or ""),
                )
            )
    response["output"] = output
    response["usage"] = response_usage(answer.get("usage")) or response_usage(estimated_usage)
    finish_reason = choice.get("finish_reason") if isinstance(choice, dict) else None
    _finish(response, finish_reason, answer.get("usage"))
    return response


# --------------------------------------------------------------------------- streams


def response_event(event_type: str, data: dict) -> bytes:
    return named_event(event_type, {"type": event_type, **data})


class ChatStreamToResponseEvents:
    """Chat-completions chunks (the first choice) in, Responses stream events out.

    The sequence, as OpenAI sends it: response.created, response.in_progress; per output
    item output_item.added, (content_part.added, output_text.delta…, output_text.done,
    content_part.done | function_call_arguments.delta…, .done), output_item.done; and
    response.completed (or .incomplete) with the whole Response and its usage.
    A stream converter (see the package header): raw upstream bytes in."""

    def __init__(self, shell: dict) -> None:
        self.response = dict(shell)
        self._upstream = UpstreamChatChunks()
        self._started = self._closed = False
        self.rid = shell["id"].removeprefix("resp_")
        self.sequence = 0
        self.items: list[dict] = []
        self.text: list[str] = []
        self.text_index: int | None = None
        self.calls: dict[int, int] = {}  # chat tool_call index -> output index
        self.finish_reason: str | None = None
        self.usage: dict | None = None
        self.service_tier: object = None  # the usage chunk's (unchecked: usage.tier)
        self.cost_of: Callable[[], str] | None = None  # the price finish() shows

    def _ev(self, event_type: str, **data: Any) -> bytes:
        out = response_event(event_type, {**data, "sequence_number": self.sequence})
        self.sequence += 1
        return out

    @property
    def done(self) -> bool:
        """The upstream's [DONE] or in-band error arrived: stop reading."""
        return self._upstream.ended

    @property
    def error(self) -> dict | None:
        return self._upstream.error

    @property
    def complete(self) -> bool:
        return self.error is None and (self.done or self.finish_reason is not None)

    def start(self) -> bytes:
        """response.created and .in_progress (once; feed, finish and fail send them if
        not yet sent)."""
        if self._started:
            return b""
        self._started = True
        snapshot = {
            **self.response,
            "created_at": self.response.get("created_at") or int(time.time()),
        }
        return self._ev("response.created", response=snapshot) + self._ev(
            "response.in_progress", response=snapshot
        )

    def feed(self, data: bytes) -> bytes:
        """Raw upstream bytes in (b"" once it closed), Responses events out."""
        if self._closed or self.done:
            return b""
        out = self.start()
        for chunk in self._upstream.read(data):
            out += self.feed_chunk(chunk)
        return out

    def feed_chunk(self, chunk: dict) -> bytes:
        """One parsed chat chunk (a whole answer replayed as one, too)."""
        out: list[bytes] = []
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
            self.service_tier = chunk.get("service_tier")
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
            content = delta.get("content")
            if isinstance(content, str) and content:
                out.append(self._text(content))
            for call in delta.get("tool_calls") or ():
                if isinstance(call, dict):
                    out.append(self._call(call))
            if choice.get("finish_reason") is not None:
                self.finish_reason = choice["finish_reason"]
        return b"".join(out)

    def _text(self, piece: str) -> bytes:
        out = b""
        if self.text_index is None:
            self.text_index = len(self.items)
            item = message_item(f"msg_{self.rid}", "", "in_progress")
            self.items.append(item)
            out += self._ev("response.output_item.added", output_index=self.text_index, item=item)
            out += self._ev(
                "response.content_part.added",
                item_id=item["id"],
                output_index=self.text_index,
                content_index=0,
                part={"type": "output_text", "text": "", "annotations": []},
            )
        self.text.append(piece)
        return out + self._ev(
            "response.output_text.delta",
            item_id=self.items[self.text_index]["id"],
            output_index=self.text_index,
            content_index=0,
            delta=piece,
            logprobs=[],
        )

    def _call(self, call: dict) -> bytes:
        index = call.get("index", 0)
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        out = b""
        if index not in self.calls:
            self.calls[index] = len(self.items)
            n = len(self.calls) - 1
            item = function_call_item(
                f"fc_{self.rid}_{n}",
                str(call.get("id") or f"call_{self.rid}_{n}"),
                str(function.get("name") or ""),
                "",
                "in_progress",
            )
            self.items.append(item)
            out += self._ev(
                "response.output_item.added", output_index=self.calls[index], item=dict(item)
            )
        output_index = self.calls[index]
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            item = self.items[output_index]
            item["arguments"] += arguments
            out += self._ev(
                "response.function_call_arguments.delta",
                item_id=item["id"],
                output_index=output_index,
                delta=arguments,
            )
        return out

    def finish(self, estimated_usage: dict | None = None) -> bytes:
        """The closing events, once the upstream stream ended cleanly.

        ``estimated_usage`` (chat-completions shape) is shown when the upstream stream
        reported none."""
        if self._closed:
            return b""
        self._closed = True
        prologue = self.start()
        text = "".join(self.text)
        for item in self.items:
            if item["type"] == "message":
                item.update(message_item(item["id"], text))
            else:
                item["status"] = "completed"
        response = self.response
        response["output"] = self.items
        response["usage"] = response_usage(self.usage) or response_usage(estimated_usage)
        if self.cost_of is not None and response["usage"] is not None:
            response["usage"]["cost"] = self.cost_of()
        # before the items' done events: they carry the status of the one cut off
        _finish(response, self.finish_reason, self.usage)
        out: list[bytes] = [prologue]
        for output_index, item in enumerate(self.items):
            if item["type"] == "message":
                part = {"type": "output_text", "text": text, "annotations": []}
                out.append(
                    self._ev(
                        "response.output_text.done",
                        item_id=item["id"],
                        output_index=output_index,
                        content_index=0,
                        text=text,
                        logprobs=[],
                    )
                )
                out.append(
                    self._ev(
                        "response.content_part.done",
                        item_id=item["id"],
                        output_index=output_index,
                        content_index=0,
                        part=part,
                    )
                )
            else:
                out.append(
                    self._ev(
                        "response.function_call_arguments.done",
                        item_id=item["id"],
                        output_index=output_index,
                        arguments=item["arguments"],
                    )
                )
            out.append(self._ev("response.output_item.done", output_index=output_index, item=item))
        name = "response.completed" if response["status"] == "completed" else "response.incomplete"
        out.append(self._ev(name, response=response))
        return b"".join(out)

    def fail(self, message: str, error_type: str = "server_error") -> bytes:
        if self._closed:
            return b""
        self._closed = True
        prologue = self.start()
        response = self.response
        response["status"] = "failed"
        response["output"] = self.items
        response["error"] = {"code": error_type, "message": message}
        return prologue + self._ev("response.failed", response=response)
