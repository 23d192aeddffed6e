"""moto's server, deciding DynamoDB requests one at a time.

DynamoDB applies each conditional write atomically: two writes conditioned on the same old value
never both succeed. moto checks a condition and writes without a lock, so under concurrent
requests both can pass. The tests that share one table between processes (two runtimes, two
workers racing for a rate or a slot) need the real behaviour, so this runs moto's own server with
DynamoDB requests serialized; every other service is served concurrently as before.

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

DYNAMODB = "DynamoDB_"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    args = parser.parse_args()

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
