// Calls a Tollgate gateway through the official JavaScript SDKs and prints, as JSON, what
// each SDK parsed: the answer's request id and the usage.cost it exposes.
// Usage: node costs.mjs <gateway base url> <inference key>
import Anthropic from "@anthropic-ai/sdk";
import OpenAI from "openai";

const [gateway, key] = process.argv.slice(2);
const openai = new OpenAI({ baseURL: `${gateway}/v1`, apiKey: key, maxRetries: 0 });
const claude = new Anthropic({ baseURL: gateway, apiKey: key, maxRetries: 0 });
const ask = [{ role: "user", content: "hi #prompt_tokens=100 #completion_tokens=10" }];
const out = {};

{
  const { data, response } = await openai.chat.completions
    .create({ model: "test-model", messages: ask })
    .withResponse();
  out.chat = {
    id: response.headers.get("x-request-id"),
    cost: data.usage.cost,
    header: response.headers.get("x-tollgate-cost"),
    text: data.choices[0].message.content,
  };
}
{
  const { data: stream, response } = await openai.chat.completions
    .create({
      model: "test-model",
      messages: [{ role: "user", content: "hi #chunks=4" }],
      stream: true,
      stream_options: { include_usage: true },
    })
    .withResponse();
  let last = null;
  let text = "";
  for await (const chunk of stream) {
    if (chunk.usage) last = chunk.usage;
    text += chunk.choices[0]?.delta?.content ?? "";
  }
  out.chat_stream = { id: response.headers.get("x-request-id"), cost: last?.cost, text };
}
{
  const { data, response } = await claude.messages
    .create({ model: "claude-fake", max_tokens: 50, messages: [{ role: "user", content: "hi" }] })
    .withResponse();
  out.messages = {
    id: response.headers.get("request-id"),
    cost: data.usage.cost,
    text: data.content[0].text,
  };
}
{
  const stream = claude.messages.stream({
    model: "claude-fake",
    max_tokens: 50,
    messages: [{ role: "user", content: "hi #chunks=3" }],
  });
  let cost = null;
  stream.on("streamEvent", (event) => {
    if (event.type === "message_delta") cost = event.usage.cost;
  });
  const final = await stream.finalMessage();
  const { response } = await stream.withResponse();
  out.messages_stream = {
    id: response.headers.get("request-id"),
    cost,
    text: final.content[0].text,
  };
}
console.log(JSON.stringify(out));
