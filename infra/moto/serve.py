"""moto's server, deciding DynamoDB requests one at a time.

DynamoDB applies each conditional write atomically: two writes conditioned on the same old value
never both succeed. moto checks a condition and writes without a lock, so under concurrent
requests both can pass. The tests that share one table between processes (two runtimes, two
workers racing for a rate or a slot) need the real behaviour, so this runs moto's own server with
DynamoDB and DynamoDB Streams requests serialized; every other service is served concurrently as
before.

A transaction moto refuses is undone by putting back a copy of the whole table, taken before it.
Its writes made before the refusal had already appended records to the table's stream, and the
shard iterators handed out before still read the old stream (with those records), while the copy
numbers the next real writes with the same sequence numbers. A stream reader that read such a
record then skips the real write that reuses its number: a job created then is never seen. Here a
refused transaction leaves the stream as it was, in the same object: its records are dropped and
the put-back table keeps the stream every iterator reads. (DynamoDB writes a transaction's
records only once it succeeds.)

It also stands in for IAM's table actions, which no emulator enforces: a test names an access key
and the DynamoDB actions a function is granted (`POST /_conveyor/grants` with
`{"access_key": "...", "dynamodb": ["GetItem", ...]}`), and a DynamoDB request signed with that
key for any other action is refused with AccessDeniedException, as AWS refuses it. As in IAM, a
transaction is no action of its own: each of its items needs its action (`Put` PutItem, `Update`
UpdateItem, `Delete` DeleteItem, `ConditionCheck` ConditionCheckItem). Every
DynamoDB action asked for with such a key is noted; `GET /_conveyor/used` answers
`{"<access key>": ["GetItem", ...]}`, each key's actions, asked for or refused.

Usage: python serve.py -H 127.0.0.1 -p PORT (with the venv's python, where moto is installed).
"""

import argparse
import io
import json
import re
import threading

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple

DYNAMODB = ("DynamoDB_", "DynamoDBStreams_")
TABLE_ACTION = "DynamoDB_20120810."
CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/")


class Grants:
    """The table actions each registered access key may take, and those each key asked for."""

    def __init__(self):
        self.lock = threading.Lock()
        self.granted = {}
        self.used = {}

    def grant(self, access_key, actions):
        with self.lock:
            self.granted[access_key] = set(actions)
            self.used.setdefault(access_key, set())

    def refused(self, environ, operation):
        """The first action DynamoDB `operation` needs that the request's key may not take
        (noting every action it needs, for a registered key), or None."""
        found = CREDENTIAL.search(environ.get("HTTP_AUTHORIZATION", ""))
        key = found.group(1) if found else None
        with self.lock:
            if key not in self.granted:
                return None
        actions = actions_of(environ, operation)
        with self.lock:
            self.used[key].update(actions)
            return next((a for a in actions if a not in self.granted[key]), None)

    def answer(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == "/_conveyor/grants" and environ.get("REQUEST_METHOD") == "POST":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = json.loads(environ["wsgi.input"].read(length) or b"{}")
            self.grant(body["access_key"], body["dynamodb"])
            return respond(start_response, "204 No Content", b"")
        if path == "/_conveyor/used":
            with self.lock:
                used = {k: sorted(v) for k, v in self.used.items()}
            return respond(start_response, "200 OK", json.dumps(used).encode())
        return respond(start_response, "404 Not Found", b"{}")


IN_TRANSACTION = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
}


def actions_of(environ, operation):
    """The IAM actions a DynamoDB request for `operation` needs (its body read and put back)."""
    if operation != "TransactWriteItems":
        return [operation]
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length)
    environ["wsgi.input"] = io.BytesIO(body)
    items = json.loads(body or b"{}").get("TransactItems", [])
    return sorted({IN_TRANSACTION[kind] for item in items for kind in item if kind in IN_TRANSACTION})


def respond(start_response, status, body, content_type="application/json"):
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]


def access_denied(start_response, action):
    body = json.dumps(
        {
            "__type": "com.amazon.coral.service#AccessDeniedException",
            "Message": f"not authorized to perform: dynamodb:{action}",
        }
    ).encode()
    return respond(start_response, "400 Bad Request", body, "application/x-amz-json-1.0")


def keep_streams_through_refused_transactions() -> None:
    from moto.dynamodb.models import DynamoDBBackend

    transact = DynamoDBBackend.transact_write_items

    def transact_write_items(self, transact_items):
        names = {
            op.get("TableName")
            for item in transact_items
            for op in item.values()
            if isinstance(op, dict)
        }
        streams = {
            name: (self.tables[name].stream_shard, len(self.tables[name].stream_shard.items))
            for name in names
            if name in self.tables and self.tables[name].stream_shard is not None
        }
        try:
            return transact(self, transact_items)
        except Exception:
            for name, (shard, length) in streams.items():
                del shard.items[length:]
                table = self.tables.get(name)
                if table is not None:
                    table.stream_shard = shard
                    shard.table = table
            raise

    DynamoDBBackend.transact_write_items = transact_write_items


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    args = parser.parse_args()

    keep_streams_through_refused_transactions()
    moto = DomainDispatcherApplication(create_backend_app)
    one_at_a_time = threading.Lock()
    grants = Grants()

    def app(environ, start_response):
        if environ.get("PATH_INFO", "").startswith("/_conveyor/"):
            return grants.answer(environ, start_response)
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if target.startswith(TABLE_ACTION):
            refused = grants.refused(environ, target[len(TABLE_ACTION):])
            if refused:
                return access_denied(start_response, refused)
        if target.startswith(DYNAMODB):
            with one_at_a_time:
                # The whole response is made under the lock.
                return list(moto(environ, start_response))
        return moto(environ, start_response)

    run_simple(
        args.host,
        args.port,
        app,
        threaded=True,
        request_handler=MotoRequestHandler,
    )


if __name__ == "__main__":
    main()
