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

Usage: python serve.py -H 127.0.0.1 -p PORT (with the venv's python, where moto is installed).
"""

import argparse
import threading

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple

DYNAMODB = ("DynamoDB_", "DynamoDBStreams_")


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

    def app(environ, start_response):
        if environ.get("HTTP_X_AMZ_TARGET", "").startswith(DYNAMODB):
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
