"""A local HTTP server for the tests: a webhook that records every POST as one JSON line, or a W&B stand-in
that fails (answers 500) or accepts and never answers.

    python tests/bats/webhook_server.py PORT_FILE RECORD_FILE [--hang | --status CODE]

Listens on 127.0.0.1 on a free port, written to PORT_FILE once it listens. Each POST is appended to
RECORD_FILE as {"path", "headers", "body"} (the body parsed as JSON when it is JSON) and answered 200 (or
CODE); with --hang it is recorded and never answered.
"""

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port_file, record_file = sys.argv[1], sys.argv[2]
hang = "--hang" in sys.argv[3:]
answer = int(sys.argv[sys.argv.index("--status") + 1]) if "--status" in sys.argv else 200
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's name)
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode("utf-8", "replace")
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            body = raw
        with lock, open(record_file, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"path": self.path, "headers": dict(self.headers), "body": body}) + "\n")
        if hang:
            time.sleep(3600)
            return
        self.send_response(answer)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
with open(port_file + ".tmp", "w", encoding="utf-8") as fh:
    fh.write(str(server.server_address[1]))
import os  # noqa: E402

os.replace(port_file + ".tmp", port_file)
server.serve_forever()
