// A pacing OpenAI-compatible upstream for bench/streams_bench.py (plain Node, no packages).
//
// POST /v1/chat/completions with "stream": true answers a chat.completion.chunk stream: a
// role chunk at once, then a content chunk every --interval-ms for --duration-s, a finish
// chunk, the usage chunk (when stream_options.include_usage) and [DONE]. Every chunk
// carries the time it was written, `"x_sent_us":<CLOCK_MONOTONIC µs>` as its last field,
// so a client on the same machine measures each chunk's delay without a shared epoch
// (process.hrtime is CLOCK_MONOTONIC, the same clock in every process).
//
//   node bench/streams/upstream.mjs --port 8099 --interval-ms 50 --duration-s 30

import http from "node:http";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => {
    if (arg.startsWith("--")) pairs.push([arg.slice(2), all[i + 1]]);
    return pairs;
  }, []),
);
const port = Number(args.port ?? 8099);
const intervalMs = Number(args["interval-ms"] ?? 50);
const durationS = Number(args["duration-s"] ?? 30);
const configured = Math.max(1, Math.round((durationS * 1000) / intervalMs));

const nowUs = () => Number(process.hrtime.bigint() / 1000n);
let streamSeq = 0;

function chunk(id, created, choice) {
  // x_sent_us last: the client finds it with one lastIndexOf, no JSON parse.
  return (
    `data: {"id":"${id}","object":"chat.completion.chunk","created":${created},` +
    `"model":"m","choices":[${choice}],"x_sent_us":${nowUs()}}\n\n`
  );
}

function stream(req, res, body) {
  const id = `chatcmpl-${process.pid}-${++streamSeq}`;
  const created = Math.floor(Date.now() / 1000);
  const withUsage = Boolean(body.stream_options && body.stream_options.include_usage);
  // max_tokens caps the chunks (a short warm-up stream); the pacing is the server's.
  const asked = Number(body.max_tokens ?? body.max_completion_tokens);
  const chunks = asked > 0 ? Math.min(asked, configured) : configured;
  res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
  res.write(
    chunk(id, created, '{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}'),
  );
  const started = performance.now();
  let sent = 0;
  let closed = false;
  res.on("close", () => {
    closed = true;
  });
  const tick = () => {
    if (closed) return;
    sent += 1;
    res.write(chunk(id, created, '{"index":0,"delta":{"content":" tok"},"finish_reason":null}'));
    if (sent < chunks) {
      // Paced against the stream's start, not the last write: no drift under load.
      setTimeout(tick, Math.max(0, started + (sent + 1) * intervalMs - performance.now()));
      return;
    }
    let tail = chunk(id, created, '{"index":0,"delta":{},"finish_reason":"stop"}');
    if (withUsage) {
      tail +=
        `data: {"id":"${id}","object":"chat.completion.chunk","created":${created},"model":"m",` +
        `"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":${chunks},` +
        `"total_tokens":${12 + chunks}}}\n\n`;
    }
    res.end(tail + "data: [DONE]\n\n");
  };
  setTimeout(tick, intervalMs);
}

const server = http.createServer((req, res) => {
  const parts = [];
  req.on("data", (part) => parts.push(part));
  req.on("end", () => {
    let body = {};
    try {
      body = JSON.parse(Buffer.concat(parts).toString() || "{}");
    } catch {
      res.writeHead(400, { "content-type": "application/json" });
      res.end('{"error":{"message":"bad json","type":"invalid_request_error"}}');
      return;
    }
    if (req.url.endsWith("/chat/completions") && body.stream) {
      stream(req, res, body);
      return;
    }
    res.writeHead(404, { "content-type": "application/json" });
    res.end('{"error":{"message":"streams only","type":"invalid_request_error"}}');
  });
});
server.keepAliveTimeout = 60_000;
server.headersTimeout = 0;
server.requestTimeout = 0;
server.listen(port, "127.0.0.1", 8192);
