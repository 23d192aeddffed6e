"""A Conveyor external handler in Python, standard library only.

It serves two job types at one URL (the call's job.type says which):

- py.echo answers at once with {"echo": <payload>}. For trying failures, the payload may ask
  it to answer 500 on the first attempt ("fail_first": true), to refuse with 400
  ("reject": "why"), or to take its time ("sleep_ms": n, on the first attempt only with
  "sleep_first": true).
- py.long answers 202 at once and works in the background: "steps" steps of "step_ms" each,
  reporting progress with the job token after each, and stopping when a heartbeat says the
  job was cancelled; then it posts the result with the token.

Every call's signature is checked against SIGNING_SECRET (the tenant's secret: GET
/v1/webhook-secret); set it, or the handler refuses every call. PORT (default 8000) is where it
listens, on 127.0.0.1.
"""

import hashlib
import hmac
import json
import os
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET = os.environ.get("SIGNING_SECRET", "")
PORT = int(os.environ.get("PORT", "8000"))
TOLERANCE_S = 300


def log(*parts):
    print(*parts, flush=True)


def verified(headers, body):
    """True when X-Conveyor-Signature holds for this body under SECRET."""
    header = headers.get("x-conveyor-signature", "")
    fields = [p.split("=", 1) for p in header.split(",") if "=" in p]
    stamp = next((v for k, v in fields if k == "t"), None)
    if not SECRET or stamp is None or abs(time.time() - int(stamp)) > TOLERANCE_S:
        return False
    signed = f"{stamp}.{headers.get('x-conveyor-job-id')}.{headers.get('x-conveyor-attempt')}.".encode() + body
    expected = hmac.new(SECRET.encode(), signed, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, v) for k, v in fields if k == "v2")


def call_api(call, route, body=None):
    """POST to one of the job's handler routes with its token; the answer's JSON."""
    url = f"{call['api']}/v1/jobs/{call['job']['id']}/handler/{route}"
    request = urllib.request.Request(
        url,
        data=json.dumps(body or {}).encode(),
        headers={"Authorization": f"Bearer {call['token']}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read() or b"{}")


def long_job(call):
    """py.long: the steps, with progress, stopping on a cancel; then the result, posted."""
    job, payload = call["job"], call["job"]["payload"] or {}
    steps, step_ms = int(payload.get("steps", 5)), int(payload.get("step_ms", 200))
    try:
        for done in range(1, steps + 1):
            time.sleep(step_ms / 1000)
            live = call_api(call, "progress", {"percent": done * 100 // steps, "message": f"step {done} of {steps}"})
            if live.get("cancel_requested"):
                log(f"cancel seen for {job['id']}")
                call_api(call, "complete", {"error": {"message": "cancelled on request"}})
                return
        call_api(call, "complete", {"result": {"steps": steps, "job": job["id"]}})
    except Exception as e:  # the attempt's deadline passes, and the worker retries it
        log(f"{job['id']}: {e}")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the worker sends each call on a connection it keeps

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the worker stopped waiting (its timeout)
            log(f"{self.headers.get('x-conveyor-job-id')}: the caller was gone")

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        if not verified(self.headers, body):
            return self.answer(401, {"message": "bad signature"})
        call = json.loads(body)
        job, payload = call["job"], call["job"]["payload"] or {}
        first = job["attempt"] == 1
        if job["type"] == "py.long":
            threading.Thread(target=long_job, args=(call,), daemon=True).start()
            return self.answer(202, {})
        if payload.get("reject"):
            return self.answer(400, {"message": payload["reject"]})
        if payload.get("fail_first") and first:
            return self.answer(500, {"message": "failing the first attempt"})
        if payload.get("sleep_ms") and (first or not payload.get("sleep_first")):
            time.sleep(int(payload["sleep_ms"]) / 1000)
        return self.answer(200, {"echo": payload})

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    if not SECRET:
        sys.exit("set SIGNING_SECRET to the tenant's secret (GET /v1/webhook-secret)")
    server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
    log(f"listening on http://127.0.0.1:{server.server_address[1]}")
    server.serve_forever()
