"""Stand-ins for the Hugging Face Hub and download.pytorch.org on 127.0.0.1.

Started by tests/test_hub_download.cpp, one process per test. It prints one
line, "PORTS <hub> <cdn> PID <pid>", then serves until killed:

  hub port  /<org>/<name>/resolve/<revision>/<file>  HEAD and GET, as the Hub
            answers: X-Repo-Commit, an ETag (git blob id) and the bytes for a
            small file; for an "LFS" file a 302 to the cdn port with
            X-Linked-Etag (its SHA-256) and X-Linked-Size. 404 otherwise.
            /standin/old-name/... answers 307 to standin/resnet18 (a renamed
            repository), a relative redirect.
            /models/<file>  torchvision's weight files, Range supported.
            /_files  JSON: the files served, with sizes and digests.
            /_stats  JSON: every request seen (both ports), in order.
  cdn port  /cdn/<sha256>  the LFS files' bytes, Range supported.

Options make it misbehave on purpose: --cut (the first GET of each file
stops halfway), --no-range (Range ignored: always 200 and the whole file),
--corrupt (one byte changed), --slow SECONDS (a pause halfway through each
body), --fail N (the first N requests of each path get 503), --token T (the
hub port answers 401 without "Authorization: Bearer T"). --serve DIR adds
the files under DIR: DIR/<org>/<name>/<file> as repository files (LFS from
10 KB), DIR/models/<file> as torchvision's.
"""

import argparse
import hashlib
import json
import os
import pathlib
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

COMMIT = hashlib.sha1(b"resnet stand-in hub").hexdigest()


def make_bytes(seed, size):
    return random.Random(seed).getrandbits(8 * size).to_bytes(size, "little")


def git_blob_sha1(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


CONFIG = b'{"architecture": "resnet18", "num_classes": 10}\n'
LFS_WEIGHTS = make_bytes(1, 300_000)
LFS_SUBFOLDER = make_bytes(2, 40_000)
TORCHVISION = make_bytes(3, 200_000)
TORCHVISION_NAME = "resnet18-%s.pth" % hashlib.sha256(TORCHVISION).hexdigest()[:8]

# repository -> file -> (bytes, is LFS)
REPOS = {
    "standin/resnet18": {
        "config.json": (CONFIG, False),
        "model.safetensors": (LFS_WEIGHTS, True),
        "weights/extra.bin": (LFS_SUBFOLDER, True),
    },
}
# old name -> new name
RENAMED = {"standin/old-name": "standin/resnet18"}
CDN = {hashlib.sha256(data).hexdigest(): data
       for files in REPOS.values() for data, lfs in files.values() if lfs}
MODELS = {TORCHVISION_NAME: TORCHVISION}


class State:
    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.requests = []
        self.counts = {}
        self.cut_done = set()

    def record(self, port, handler):
        with self.lock:
            entry = {
                "port": port,
                "method": handler.command,
                "path": urlsplit(handler.path).path,
                "range": handler.headers.get("Range"),
                "authorization": handler.headers.get("Authorization"),
            }
            self.requests.append(entry)
            key = (handler.command, entry["path"])
            self.counts[key] = self.counts.get(key, 0) + 1
            return self.counts[key]

    def first_cut(self, path):
        with self.lock:
            if path in self.cut_done:
                return False
            self.cut_done.add(path)
            return True


def make_handler(state, role, ports):
    args = state.args

    class Handler(BaseHTTPRequestHandler):
        server_version = "standin"

        def log_message(self, *unused):
            pass

        def do_HEAD(self):
            self.serve(with_body=False)

        def do_GET(self):
            self.serve(with_body=True)

        def send_plain(self, status, text, headers=None):
            body = text.encode()
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command == "GET":
                self.wfile.write(body)

        def serve(self, with_body):
            path = urlsplit(self.path).path
            if path in ("/_stats", "/_files"):
                self.send_plain(200, json.dumps(self.internal(path)))
                return
            seen = state.record(role, self)
            if seen <= args.fail:
                self.send_plain(503, "stand-in: failing on purpose")
                return
            if role == "cdn":
                data = CDN.get(path[len("/cdn/"):]) if path.startswith("/cdn/") else None
                if data is None:
                    self.send_plain(404, "no such blob")
                    return
                self.send_file(data, {}, with_body)
                return
            if path.startswith("/models/"):
                data = MODELS.get(unquote(path[len("/models/"):]))
                if data is None:
                    self.send_plain(404, "no such model file")
                    return
                self.send_file(data, {}, with_body)
                return
            if "/resolve/" in path:
                self.resolve(path, with_body)
                return
            self.send_plain(404, "not found")

        def internal(self, path):
            if path == "/_stats":
                with state.lock:
                    return {"requests": list(state.requests)}
            files = {}
            for repo, entries in REPOS.items():
                for name, (data, lfs) in entries.items():
                    files[repo + "/" + name] = {
                        "size": len(data),
                        "sha256": hashlib.sha256(data).hexdigest(),
                        "git_sha1": git_blob_sha1(data),
                        "lfs": lfs,
                    }
            models = {name: {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                      for name, data in MODELS.items()}
            return {"commit": COMMIT, "hub": files, "models": models}

        def resolve(self, path, with_body):
            if args.token and self.headers.get("Authorization") != "Bearer " + args.token:
                self.send_plain(401, "stand-in: token required",
                                {"X-Error-Code": "RepoNotFound"})
                return
            repo, rest = path.lstrip("/").split("/resolve/", 1)
            revision, _, filename = rest.partition("/")
            revision, filename = unquote(revision), unquote(filename)
            if repo in RENAMED:
                # A renamed repository: a relative redirect to its new name.
                self.send_response(307)
                self.send_header("Location", "/%s/resolve/%s" % (RENAMED[repo], rest))
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            entries = REPOS.get(repo)
            if entries is None:
                self.send_plain(404, "no such repository", {"X-Error-Code": "RepoNotFound"})
                return
            if revision not in ("main", COMMIT):
                self.send_plain(404, "no such revision", {"X-Error-Code": "RevisionNotFound"})
                return
            if filename not in entries:
                self.send_plain(404, "no such file", {
                    "X-Error-Code": "EntryNotFound",
                    "X-Repo-Commit": COMMIT,
                    "X-Error-Message": "Entry not found",
                })
                return
            data, lfs = entries[filename]
            if lfs:
                sha = hashlib.sha256(data).hexdigest()
                self.send_response(302)
                self.send_header("Location", "http://127.0.0.1:%d/cdn/%s" % (ports["cdn"], sha))
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("X-Linked-Etag", '"%s"' % sha)
                self.send_header("X-Linked-Size", str(len(data)))
                # The real Hub's ETag of a redirect is the LFS pointer's id.
                self.send_header("ETag", '"%s"' % git_blob_sha1(b"pointer " + sha.encode()))
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_file(data, {
                "X-Repo-Commit": COMMIT,
                "ETag": '"%s"' % git_blob_sha1(data),
            }, with_body)

        def send_file(self, data, headers, with_body):
            start = 0
            wanted = self.headers.get("Range")
            status = 200
            if wanted and not args.no_range and wanted.startswith("bytes="):
                first, _, last = wanted[len("bytes="):].partition("-")
                start = int(first)
                end = int(last) if last else len(data) - 1
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", "bytes */%d" % len(data))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 206
                body = data[start:end + 1]
            else:
                body = data
            if args.corrupt and body:
                middle = len(data) // 2 - start
                if 0 <= middle < len(body):
                    body = body[:middle] + bytes([body[middle] ^ 0xFF]) + body[middle + 1:]
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(len(body)))
            if status == 206:
                self.send_header("Content-Range", "bytes %d-%d/%d" % (start, start + len(body) - 1, len(data)))
            self.end_headers()
            if not with_body:
                return
            half = len(body) // 2
            path = urlsplit(self.path).path
            if args.cut and len(body) > 1024 and state.first_cut(path):
                self.wfile.write(body[:half])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
                return
            self.wfile.write(body[:half])
            self.wfile.flush()
            if args.slow:
                time.sleep(args.slow)
            self.wfile.write(body[half:])

    return Handler


def serve_folder(folder):
    """Adds the files under `folder` to REPOS, CDN and MODELS."""
    for path in sorted(p for p in pathlib.Path(folder).rglob("*") if p.is_file()):
        parts = path.relative_to(folder).parts
        data = path.read_bytes()
        if parts[0] == "models" and len(parts) == 2:
            MODELS[parts[1]] = data
        elif len(parts) >= 3:
            lfs = len(data) >= 10_000
            REPOS.setdefault(parts[0] + "/" + parts[1], {})["/".join(parts[2:])] = (data, lfs)
            if lfs:
                CDN[hashlib.sha256(data).hexdigest()] = data


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", default="")
    parser.add_argument("--cut", action="store_true")
    parser.add_argument("--no-range", action="store_true")
    parser.add_argument("--corrupt", action="store_true")
    parser.add_argument("--slow", type=float, default=0.0)
    parser.add_argument("--fail", type=int, default=0)
    parser.add_argument("--token", default="")
    parser.add_argument("--lifetime", type=float, default=300.0)
    args = parser.parse_args()
    if args.serve:
        serve_folder(args.serve)

    state = State(args)
    ports = {}
    servers = {}
    for role in ("hub", "cdn"):
        servers[role] = ThreadingHTTPServer(("127.0.0.1", 0), None)
        ports[role] = servers[role].server_address[1]
    for role, server in servers.items():
        server.RequestHandlerClass = make_handler(state, role, ports)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
    print("PORTS %d %d PID %d" % (ports["hub"], ports["cdn"], os.getpid()), flush=True)
    # Until the test kills this process; if the test dies first, soon after
    # it (the parent changes), and in any case after --lifetime seconds.
    parent = os.getppid()
    deadline = time.monotonic() + args.lifetime
    while os.getppid() == parent and time.monotonic() < deadline:
        time.sleep(0.2)

if __name__ == "__main__":
    main()
