// The stream client of bench/streams_bench.py (plain Node, no packages).
//
// Opens --streams C chat-completions streams to --url (started evenly over --ramp-s) and
// measures, per content chunk, arrival − the upstream's x_sent_us (both CLOCK_MONOTONIC),
// per stream the time to its first chunk, and which streams did not complete (status,
// in-band error, cut short, socket error). Prints to stdout, for the orchestrator:
//   OPEN <content chunks so far>      every stream has had its first chunk
//   CLOSING <content chunks so far>   the first stream ended
//   RESULT <json>                     the figures, when every stream ended
//
//   node bench/streams/client.mjs --url http://127.0.0.1:8000/v1/chat/completions \
//     --key tg-… --model bench-model --streams 200 --chunks 600 --ramp-s 2

import http from "node:http";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => {
    if (arg.startsWith("--")) pairs.push([arg.slice(2), all[i + 1]]);
    return pairs;
  }, []),
);
const url = new URL(args.url);
const streams = Number(args.streams ?? 100);
const expected = Number(args.chunks); // content chunks each stream should carry
const rampMs = Number(args["ramp-s"] ?? 2) * 1000;
const timeoutMs = Number(args["timeout-s"] ?? 120) * 1000;
const body = JSON.stringify({
  model: args.model ?? "m",
  stream: true,
  max_tokens: expected,
  messages: [{ role: "user", content: "Stream, please." }],
});
const headers = { "content-type": "application/json", "content-length": Buffer.byteLength(body) };
if (args.key) headers.authorization = `Bearer ${args.key}`;

const nowUs = () => Number(process.hrtime.bigint() / 1000n);
const MARK = '"x_sent_us":';
const delays = new Float64Array(streams * expected + streams);
let delayCount = 0;
const ttfts = [];
let contentChunks = 0;
let opened = 0; // streams that had their first chunk, or ended before it
let ended = 0;
let closingSaid = false;
const failures = {};
let completed = 0;

const fail = (kind) => {
  failures[kind] = (failures[kind] ?? 0) + 1;
};

function countOpen() {
  opened += 1;
  if (opened === streams) process.stdout.write(`OPEN ${contentChunks}\n`);
}

function finishOne(ok, kind) {
  if (ok) completed += 1;
  else fail(kind);
  ended += 1;
  if (!closingSaid) {
    closingSaid = true;
    process.stdout.write(`CLOSING ${contentChunks}\n`);
  }
  if (ended === streams) report();
}

function openOne() {
  const started = nowUs();
  let first = true;
  let buffer = "";
  let got = 0;
  let done = false;
  let errored = false;
  let settled = false;
  const settle = (ok, kind) => {
    if (settled) return;
    settled = true;
    if (first) countOpen();
    finishOne(ok, kind);
  };
  const req = http.request(
    { host: url.hostname, port: url.port, path: url.pathname, method: "POST", headers, agent: false },
    (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        res.on("end", () => settle(false, `http_${res.statusCode}`));
        return;
      }
      res.setEncoding("utf8");
      res.on("data", (data) => {
        const at = nowUs();
        buffer += data;
        let cut;
        while ((cut = buffer.indexOf("\n\n")) !== -1) {
          const event = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const mark = event.lastIndexOf(MARK);
          if (mark !== -1) {
            const sent = parseInt(event.slice(mark + MARK.length), 10);
            if (first) {
              first = false;
              ttfts.push((at - started) / 1000);
              countOpen();
            } else if (event.includes('"content":" tok"')) {
              got += 1;
              contentChunks += 1;
              delays[delayCount++] = (at - sent) / 1000;
            }
          } else if (event.startsWith("data: [DONE]")) {
            done = true;
          } else if (event.includes('"error"')) {
            errored = true;
          }
        }
      });
      res.on("end", () => {
        if (errored) settle(false, "error_event");
        else if (!done) settle(false, "no_done");
        else if (got < expected) settle(false, "short");
        else settle(true);
      });
      res.on("error", () => settle(false, "response_error"));
    },
  );
  req.on("error", (err) => settle(false, `socket_${err.code ?? "error"}`));
  req.setTimeout(timeoutMs, () => {
    req.destroy();
    settle(false, "timeout");
  });
  req.end(body);
}

function quantile(sorted, q) {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

function report() {
  const d = delays.subarray(0, delayCount).sort();
  const t = Float64Array.from(ttfts).sort();
  const result = {
    streams,
    completed,
    failures,
    content_chunks: contentChunks,
    delay_ms: { p50: quantile(d, 0.5), p99: quantile(d, 0.99), max: quantile(d, 1) },
    ttft_ms: { p50: quantile(t, 0.5), p99: quantile(t, 0.99), max: quantile(t, 1) },
  };
  process.stdout.write(`RESULT ${JSON.stringify(result)}\n`);
  process.exit(0);
}

for (let i = 0; i < streams; i++) setTimeout(openOne, (i * rampMs) / streams);
