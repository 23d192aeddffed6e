"""The same two job types as worker.py, served by a Lambda function that Conveyor invokes
directly (on AWS): declare them with {"handler": {"lambda": "<this function's ARN>"}}.

Lambda runs it with the handler `lambda_function.handler`. The event is the body worker.py
is POSTed ({"job", "token", "api"}); no signature comes with it, as IAM says who may invoke the
function. The function returns how the attempt ended:

- {"result": <any JSON>}: succeeded with that result;
- {"error": {"message": "...", "retryable": false}}: failed (tried again if retryable);
- {"accepted": true}: still running, to be completed later with the job token;
- raising: a retryable failure, as an HTTP handler's 500.

py.echo returns {"echo": <payload>} (or fails as its payload asks: "reject", "fail_first");
py.long runs its steps within the invocation, reporting progress with the token.
"""

from worker import call_api


def handler(event, context):
    job, payload = event["job"], event["job"]["payload"] or {}
    if job["type"] == "py.long":
        steps = int(payload.get("steps", 5))
        for done in range(1, steps + 1):
            live = call_api(event, "progress", {"percent": done * 100 // steps, "message": f"step {done} of {steps}"})
            if live.get("cancel_requested"):
                return {"error": {"message": "cancelled on request"}}
        return {"result": {"steps": steps, "job": job["id"]}}
    if payload.get("reject"):
        return {"error": {"message": payload["reject"], "retryable": False}}
    if payload.get("fail_first") and job["attempt"] == 1:
        raise RuntimeError("failing the first attempt")
    return {"result": {"echo": payload}}
