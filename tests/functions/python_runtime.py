"""A Lambda runtime for a Python handler, standard library only: the loop Lambda's Python
runtime runs against the Runtime API. Each event from `next` goes to the handler (argv[1],
`module.function`, imported from LAMBDA_TASK_ROOT); its return value, as JSON, is the
invocation's response, and an exception it raises the invocation's error (`Unhandled`)."""

import importlib
import json
import os
import sys
import traceback
import urllib.request

api = os.environ["AWS_LAMBDA_RUNTIME_API"]
base = (api if api.startswith("http") else f"http://{api}") + "/2018-06-01/runtime/invocation"
sys.path.insert(0, os.environ.get("LAMBDA_TASK_ROOT", "."))
module, function = sys.argv[1].rsplit(".", 1)
handler = getattr(importlib.import_module(module), function)


class Context:
    def __init__(self, request_id, deadline_ms):
        self.aws_request_id = request_id
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.deadline_ms = deadline_ms


while True:
    with urllib.request.urlopen(f"{base}/next") as answer:
        request_id = answer.headers["Lambda-Runtime-Aws-Request-Id"]
        deadline_ms = int(answer.headers.get("Lambda-Runtime-Deadline-Ms", "0"))
        event = json.loads(answer.read() or b"null")
    headers = {"Content-Type": "application/json"}
    try:
        body, route = json.dumps(handler(event, Context(request_id, deadline_ms))), "response"
    except Exception as e:  # the invocation's error, as Lambda reports an unhandled one
        body = json.dumps({
            "errorMessage": str(e),
            "errorType": type(e).__name__,
            "stackTrace": traceback.format_exc().splitlines(),
        })
        route = "error"
        headers["Lambda-Runtime-Function-Error-Type"] = "Unhandled"
    request = urllib.request.Request(f"{base}/{request_id}/{route}", data=body.encode(), headers=headers, method="POST")
    urllib.request.urlopen(request).read()
