"""Start localstripe on 127.0.0.1:<port> without pickling its store to /tmp after every write.

The stock `localstripe` command listens on every interface and rewrites /tmp/localstripe.pickle
after each request (slow as it grows, and shared between instances); the tests need neither.
"""

import sys

import aiohttp.web
import localstripe.resources
from localstripe.server import app

localstripe.resources.Store.dump_to_disk = lambda _self: None  # type: ignore[method-assign]

if __name__ == "__main__":
    aiohttp.web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
