#!/usr/bin/env python3
"""Loopback HTTP server for the ingest tests.

usage: http_server.py DIR  — serves DIR's files plus the routes below on 127.0.0.1, on a free
port chosen by the OS, printed as the first line of stdout ("PORT 12345"). It exits when stdin
closes (the test holds the pipe), so a crashed test never leaves it running, and after 120 s in
any case.

Routes: /redirect → 302 /plain.txt; /redirect-chain/N → N hops then /plain.txt; /loop → itself;
/to-ftp → 302 ftp://...; /missing → 404; /slow → headers, then 10 s of silence; /big/N → N bytes
with Content-Length; /big-chunked/N → N bytes chunked, no length; /json; /binary (image/png);
/latin1.html (ISO-8859-1 declared in the header); other paths → files from DIR.
"""
import http.server
import os
import socketserver
import sys
import threading
import time

ROOT = sys.argv[1]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep test output clean
        pass

    def send_body(self, code, ctype, body, extra=()):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def redirect(self, where):
        self.send_response(302)
        self.send_header("Location", where)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):
        p = self.path.split("?")[0]
        try:
            if p == "/redirect":
                return self.redirect("/plain.txt")
            if p.startswith("/redirect-chain/"):
                n = int(p.rsplit("/", 1)[1])
                return self.redirect("/plain.txt" if n <= 0 else "/redirect-chain/%d" % (n - 1))
            if p == "/loop":
                return self.redirect("/loop")
            if p == "/to-ftp":
                return self.redirect("ftp://127.0.0.1/x")
            if p == "/slow":
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", "100")
                self.end_headers()
                self.wfile.write(b"partial")
                self.wfile.flush()
                time.sleep(10)
                return
            if p.startswith("/big/"):
                n = int(p.rsplit("/", 1)[1])
                return self.send_body(200, "text/plain", b"x" * n)
            if p.startswith("/big-chunked/"):
                n = int(p.rsplit("/", 1)[1])
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                chunk = b"y" * 8192
                sent = 0
                while sent < n:
                    c = chunk[: min(len(chunk), n - sent)]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(c), c))
                    sent += len(c)
                self.wfile.write(b"0\r\n\r\n")
                return
            if p == "/json":
                return self.send_body(200, "application/json", b'{"answer": 42}\n')
            if p == "/binary":
                return self.send_body(200, "image/png", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" * 64)
            if p == "/latin1.html":
                body = "<html><head><title>Caf\u00e9</title></head><body><p>na\u00efve</p></body></html>"
                return self.send_body(200, "text/html; charset=ISO-8859-1", body.encode("latin-1"))
            f = os.path.join(ROOT, p.lstrip("/"))
            if p == "/missing" or not os.path.isfile(f):
                return self.send_body(404, "text/html", b"<html><body>no</body></html>")
            ctype = {".html": "text/html; charset=utf-8", ".txt": "text/plain; charset=utf-8",
                     ".pdf": "application/pdf"}.get(os.path.splitext(f)[1], "application/octet-stream")
            with open(f, "rb") as fh:
                return self.send_body(200, ctype, fh.read())
        except (BrokenPipeError, ConnectionResetError):
            pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        pass  # clients abort on purpose (timeouts, size limits): no tracebacks in test output


def main():
    srv = Server(("127.0.0.1", 0), Handler)
    print("PORT %d" % srv.server_address[1], flush=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    # Exit when the test closes our stdin (or dies), or after 120 s.
    t = threading.Thread(target=lambda: sys.stdin.read(), daemon=True)
    t.start()
    t.join(120)
    srv.shutdown()
    os._exit(0)


if __name__ == "__main__":
    main()
