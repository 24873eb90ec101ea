"""moto server, applying one request at a time.

moto's FAQ says it is not concurrency-safe: its conditional writes check the
condition and then write, with no lock between, so two threads can both pass
`attribute_not_exists(id)` or a status guard. DynamoDB applies every write to
one item atomically. Serving one request at a time restores that property, so
the race tests exercise our conditional writes rather than moto's threading.
Connections stay concurrent (threaded, keep-alive); only the work is serialized.

Usage: python scripts/moto_server.py HOST PORT
"""

import sys
import threading

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple

app = DomainDispatcherApplication(create_backend_app)
one_at_a_time = threading.Lock()


def serialized(environ, start_response):
    with one_at_a_time:
        # Drain the response inside the lock: moto may compute it lazily.
        return [b"".join(app(environ, start_response))]


if __name__ == "__main__":
    host, port = sys.argv[1], int(sys.argv[2])
    run_simple(host, port, serialized, threaded=True, request_handler=MotoRequestHandler)
