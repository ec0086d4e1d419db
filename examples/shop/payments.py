"""A fake payment provider for the example shop.

POST /charge {"amount": N}: answers 200 {"id": ...} at once, except for amounts of 1000 or
more, which it answers only after SLOW_SECONDS (default 3) -- longer than the shop's client
timeout, so the shop's checkout fails the way a slow payment API makes it fail.
"""

import json
import os
import sys
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SLOW_SECONDS = float(os.environ.get("SLOW_SECONDS", "3"))


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            self.send_error(400, "body must be JSON")
            return
        if int(body.get("amount", 0)) >= 1000:
            time.sleep(SLOW_SECONDS)
        reply = json.dumps({"id": "ch_" + uuid.uuid4().hex[:12]}).encode()
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the shop gave up waiting

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9100
    ThreadingHTTPServer((os.environ.get("HOST", "127.0.0.1"), port), Handler).serve_forever()
