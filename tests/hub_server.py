"""A real HTTP server on 127.0.0.1 that speaks the Hugging Face Hub *file* protocol, for tests.

What huggingface_hub 2.4 (``file_download.py``) needs from ``/{repo_id}/resolve/{revision}/{filename}``:

* ``HEAD``: ``X-Repo-Commit`` (the commit the revision resolves to), ``ETag`` (for LFS files the
  sha256 of the content, quoted; sent as ``X-Linked-Etag`` as well) and the size
  (``Content-Length`` / ``X-Linked-Size``).  Without ``X-Repo-Commit`` or ``ETag`` it refuses
  the server.
* ``GET``: the bytes, with ``Content-Length``; a ``Range: bytes=N-`` request (used to resume an
  interrupted transfer) gets ``206`` + ``Content-Range``.
* Errors: 404 with ``X-Error-Code`` ``RepoNotFound`` / ``RevisionNotFound`` / ``EntryNotFound``
  (the Hub's codes, which huggingface_hub maps to its exception classes).

Switches inject failures: ``status`` (answer every request with that HTTP code),
``delay`` (seconds before answering HEAD: a timeout), ``chunk_delay`` (seconds between body
chunks: a slow transfer), ``cut_body_once`` (close the connection half-way through the next GET
body), ``tamper`` (flip one byte of every body while advertising the original ETag and size),
``truncate_to`` (serve only that many bytes, consistently advertised), ``extra_body`` (that many
more bytes in every GET body than HEAD advertises: an oversize download), ``any_revision`` (answer a
revision the repository does not have with its ``main`` commit, as a careless mirror would),
``fake_commit`` / ``fake_etag`` (announce that text as ``X-Repo-Commit`` / ``ETag``).  ``requests`` records
``(method, path)`` of every request; ``count`` is their number.
"""

from __future__ import annotations

import hashlib
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Optional, Tuple
from urllib.parse import unquote, urlsplit

_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
_CHUNK = 64 * 1024


class _Repo:
    def __init__(self) -> None:
        self.commits: Dict[str, Dict[str, bytes]] = {}
        self.branches: Dict[str, str] = {}


class HubServer:
    """``with HubServer() as hub: hub.add_file("org/name", "model.safetensors", data)``."""

    def __init__(self) -> None:
        self.repos: Dict[str, _Repo] = {}
        self.requests: List[Tuple[str, str]] = []
        self.status: Optional[int] = None
        self.delay = 0.0
        self.chunk_delay = 0.0
        self.cut_body_once = False
        self.tamper = False
        self.truncate_to: Optional[int] = None
        self.extra_body = 0
        self.any_revision = False
        self.fake_commit: Optional[str] = None
        self.fake_etag: Optional[str] = None
        self._lock = threading.Lock()
        self._httpd: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None
        self.port: Optional[int] = None

    # -- content ---------------------------------------------------------------------------------
    def add_file(self, repo_id: str, filename: str, data: bytes, branch: str = "main") -> str:
        """Commit ``data`` as ``filename`` (on top of the branch's files); return the new commit id."""
        repo = self.repos.setdefault(repo_id, _Repo())
        files = dict(repo.commits.get(repo.branches.get(branch, ""), {}))
        files[filename] = bytes(data)
        commit = hashlib.sha1(f"{repo_id}:{len(repo.commits)}:{filename}:{time.time_ns()}".encode()).hexdigest()
        repo.commits[commit] = files
        repo.branches[branch] = commit
        return commit

    def reset_faults(self) -> None:
        self.status, self.delay, self.chunk_delay = None, 0.0, 0.0
        self.cut_body_once = self.tamper = False
        self.truncate_to = None
        self.extra_body = 0
        self.any_revision = False
        self.fake_commit = self.fake_etag = None

    @property
    def count(self) -> int:
        return len(self.requests)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> "HubServer":
        server = self

        class Handler(_Handler):
            hub = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- lookup ----------------------------------------------------------------------------------
    def lookup(self, repo_id: str, revision: str, filename: str):
        """``(status, headers, body)`` for a resolve URL."""
        repo = self.repos.get(repo_id)
        if repo is None:
            return 404, {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"}, b""
        commit = repo.branches.get(revision, revision)
        if commit not in repo.commits and self.any_revision and "main" in repo.branches:
            commit = repo.branches["main"]
        if commit not in repo.commits:
            return 404, {"X-Error-Code": "RevisionNotFound", "X-Error-Message": "Invalid rev id"}, b""
        files = repo.commits[commit]
        if filename not in files:
            return 404, {"X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found",
                         "X-Repo-Commit": commit}, b""
        data = files[filename]
        sha = hashlib.sha256(data).hexdigest()
        if self.truncate_to is not None:
            data = data[: self.truncate_to]
            sha = hashlib.sha256(data).hexdigest()
        if self.tamper:
            data = bytes([data[0] ^ 0xFF]) + data[1:]  # advertised sha256 stays the original's
        if self.fake_commit is not None:
            commit = self.fake_commit
        if self.fake_etag is not None:
            sha = self.fake_etag
        headers = {"X-Repo-Commit": commit, "ETag": f'"{sha}"', "X-Linked-Etag": f'"{sha}"',
                   "X-Linked-Size": str(len(data)), "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream"}
        return 200, headers, data


class _Handler(BaseHTTPRequestHandler):
    hub: HubServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    def _serve(self, head: bool) -> None:
        hub = self.hub
        path = urlsplit(self.path).path
        with hub._lock:
            hub.requests.append((self.command, path))
        if head and hub.delay:
            time.sleep(hub.delay)
        if hub.status is not None:
            return self._reply(hub.status, {"X-Error-Message": "injected failure"}, b"injected failure", head)
        match = _RESOLVE.match(path)
        if not match:
            return self._reply(404, {"X-Error-Code": "RepoNotFound"}, b"not found", head)
        status, headers, data = hub.lookup(unquote(match["repo"]), unquote(match["rev"]), unquote(match["file"]))
        if status != 200:
            return self._reply(status, headers, b"", head)
        if hub.extra_body and not head:
            data = data + b"\0" * hub.extra_body
        start = 0
        rng = self.headers.get("Range")
        if rng and not head:
            m = re.match(r"bytes=(\d+)-$", rng.strip())
            if m and int(m.group(1)) < len(data):
                start = int(m.group(1))
        if head:
            return self._reply(200, {**headers, "Content-Length": str(len(data))}, b"", True)
        body = data[start:]
        code = 206 if start else 200
        out = {**headers, "Content-Length": str(len(body))}
        if start:
            out["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        self.send_response(code)
        for k, v in out.items():
            self.send_header(k, v)
        self.end_headers()
        cut = None
        if hub.cut_body_once:
            with hub._lock:
                if hub.cut_body_once:
                    hub.cut_body_once = False
                    cut = len(body) // 2
        sent = 0
        try:
            while sent < len(body):
                if cut is not None and sent >= cut:
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                end = min(len(body), sent + _CHUNK, cut if cut is not None and sent < cut else len(body))
                self.wfile.write(body[sent:end])
                sent = end
                if hub.chunk_delay:
                    time.sleep(hub.chunk_delay)
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True

    def _reply(self, code: int, headers: Dict[str, str], body: bytes, head: bool) -> None:
        self.send_response(code)
        for k, v in headers.items():
            self.send_header(k, v)
        if "Content-Length" not in headers:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head and body:
            self.wfile.write(body)


if __name__ == "__main__":  # manual use: serve a folder's model.safetensors
    import argparse
    from pathlib import Path

    parser = argparse.ArgumentParser(description="serve converted folders over the Hub file protocol")
    parser.add_argument("folders", nargs="+", help="converted folders; each becomes repo local/<folder name>")
    args = parser.parse_args()
    hub = HubServer().start()
    for folder in map(Path, args.folders):
        for name in ("model.safetensors", "config.json", "README.md"):
            if (folder / name).is_file():
                rev = hub.add_file(f"local/{folder.name}", name, (folder / name).read_bytes())
        print(f"HF_ENDPOINT={hub.endpoint} repo local/{folder.name} revision {rev}")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        hub.stop()
