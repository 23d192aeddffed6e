// A Conveyor external handler in Node.js (18 or later), no dependencies.
//
// It serves two job types at one URL (the call's job.type says which):
// - node.echo answers at once with {"echo": <payload>}; the payload may ask it to answer 500
//   on the first attempt ("fail_first": true) or to refuse with 400 ("reject": "why");
// - node.long answers 202 at once and works in the background: "steps" steps of "step_ms"
//   each, reporting progress with the job token after each, stopping when the answer says the
//   job was cancelled; then it posts the result with the token.
//
// Every call's signature is checked against SIGNING_SECRET (the tenant's secret: GET
// /v1/webhook-secret). PORT (default 8001) is where it listens, on 127.0.0.1.

import { createHmac, timingSafeEqual } from "node:crypto";
import { createServer } from "node:http";

const SECRET = process.env.SIGNING_SECRET ?? "";
const PORT = Number(process.env.PORT ?? 8001);
const TOLERANCE_S = 300;

function verified(headers, body) {
  const fields = (headers["x-conveyor-signature"] ?? "").split(",").map((p) => p.split("="));
  const stamp = fields.find(([k]) => k === "t")?.[1];
  if (!SECRET || !stamp || Math.abs(Date.now() / 1000 - Number(stamp)) > TOLERANCE_S) return false;
  const signed = `${stamp}.${headers["x-conveyor-job-id"]}.${headers["x-conveyor-attempt"]}.`;
  const expected = createHmac("sha256", SECRET).update(signed).update(body).digest();
  return fields
    .filter(([k]) => k === "v2")
    .some(([, v]) => {
      const given = Buffer.from(v ?? "", "hex");
      return given.length === expected.length && timingSafeEqual(given, expected);
    });
}

// POST to one of the job's handler routes with its token; the answer's JSON.
async function callApi(call, route, body = {}) {
  const answer = await fetch(`${call.api}/v1/jobs/${call.job.id}/handler/${route}`, {
    method: "POST",
    headers: { authorization: `Bearer ${call.token}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  if (!answer.ok) throw new Error(`${route}: HTTP ${answer.status}`);
  return answer.json();
}

async function longJob(call) {
  const payload = call.job.payload ?? {};
  const steps = Number(payload.steps ?? 5), stepMs = Number(payload.step_ms ?? 200);
  try {
    for (let done = 1; done <= steps; done++) {
      await new Promise((r) => setTimeout(r, stepMs));
      const live = await callApi(call, "progress", { percent: Math.floor((done * 100) / steps), message: `step ${done} of ${steps}` });
      if (live.cancel_requested) {
        console.log(`cancel seen for ${call.job.id}`);
        await callApi(call, "complete", { error: { message: "cancelled on request" } });
        return;
      }
    }
    await callApi(call, "complete", { result: { steps, job: call.job.id } });
  } catch (e) {
    console.log(`${call.job.id}: ${e.message}`); // the attempt's deadline passes; the worker retries
  }
}

function answer(res, status, body) {
  res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body));
}

const server = createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    const body = Buffer.concat(chunks);
    if (!verified(req.headers, body)) return answer(res, 401, { message: "bad signature" });
    const call = JSON.parse(body);
    const payload = call.job.payload ?? {};
    if (call.job.type === "node.long") {
      longJob(call);
      return answer(res, 202, {});
    }
    if (payload.reject) return answer(res, 400, { message: payload.reject });
    if (payload.fail_first && call.job.attempt === 1) return answer(res, 500, { message: "failing the first attempt" });
    return answer(res, 200, { echo: payload });
  });
});

if (!SECRET) {
  console.error("set SIGNING_SECRET to the tenant's secret (GET /v1/webhook-secret)");
  process.exit(1);
}
server.listen(PORT, "127.0.0.1", () => console.log(`listening on http://127.0.0.1:${server.address().port}`));
