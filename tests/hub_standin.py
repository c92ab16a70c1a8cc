"""A stand-in of the Hugging Face Hub on 127.0.0.1, for `--model ORG/NAME[@REVISION]` tests.

It serves the endpoints `huggingface_hub.snapshot_download` calls (huggingface_hub 2.x): the
revision API `/api/models/{repo}/revision/{rev}` (`sha`, `siblings`), the file listing
`/api/models/{repo}/tree/{commit}`, and `/{repo}/resolve/{rev}/{file}` (HEAD and GET, with the
X-Repo-Commit, ETag and Content-Length headers it checks, and Range for resumed downloads). Unknown
repos, revisions and files get the Hub's 404 with its X-Error-Code. Every request is recorded.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


@dataclass
class Commit:
    sha: str
    files: dict[str, bytes]  # repo path -> content


def commit_of(files: dict[str, bytes]) -> Commit:
    h = hashlib.sha1()
    for path in sorted(files):
        h.update(path.encode() + b"\0" + hashlib.sha1(files[path]).digest())
    return Commit(h.hexdigest(), files)


def folder_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@dataclass
class Hub:
    repos: dict[str, dict[str, Commit]] = field(default_factory=dict)  # repo -> revision -> commit
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path)

    def add(self, repo: str, revision: str, files: dict[str, bytes]) -> Commit:
        commit = commit_of(files)
        self.repos.setdefault(repo, {})[revision] = commit
        return commit

    def commit(self, repo: str, rev: str) -> Commit | None:
        revisions = self.repos[repo]
        return revisions.get(rev) or next((c for c in revisions.values() if c.sha == rev), None)

    def downloaded(self) -> list[str]:
        """The repo paths fetched with GET .../resolve/..."""
        return [path.split("/resolve/", 1)[1].split("/", 1)[1] for method, path in self.requests
                if method == "GET" and "/resolve/" in path]


def handler(hub: Hub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_HEAD(self) -> None:
            self.serve(body=False)

        def do_GET(self) -> None:
            self.serve(body=True)

        def fail(self, code: str, sha: str | None = None) -> None:
            self.send_response(404)
            self.send_header("X-Error-Code", code)
            if sha:
                self.send_header("X-Repo-Commit", sha)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def send(self, data: bytes, headers: dict, body: bool, status: int = 200) -> None:
            self.send_response(status)
            for k, v in {**headers, "Content-Length": str(len(data))}.items():
                self.send_header(k, v)
            self.end_headers()
            if body:
                self.wfile.write(data)

        def serve(self, body: bool) -> None:
            path = urlsplit(self.path).path
            hub.requests.append((self.command, path))
            api = path.startswith("/api/models/")
            parts = [unquote(p) for p in path.removeprefix("/api/models/" if api else "/").split("/")]
            repo, verb, rev, rest = "/".join(parts[:2]), parts[2:3], parts[3] if len(parts) > 3 else "", parts[4:]
            if repo not in hub.repos:
                return self.fail("RepoNotFound")
            commit = hub.commit(repo, rev)
            if commit is None:
                return self.fail("RevisionNotFound")
            if api and verb == ["revision"]:
                info = {"id": repo, "sha": commit.sha, "siblings": [{"rfilename": f} for f in commit.files]}
                return self.send(json.dumps(info).encode(), {"Content-Type": "application/json"}, body)
            if api and verb == ["tree"]:
                listing = [{"type": "file", "path": f, "size": len(d), "oid": hashlib.sha1(d).hexdigest()}
                           for f, d in commit.files.items()]
                return self.send(json.dumps(listing).encode(), {"Content-Type": "application/json"}, body)
            name = "/".join(rest)
            if api or verb != ["resolve"] or name not in commit.files:
                return self.fail("EntryNotFound", commit.sha)
            data = commit.files[name]
            headers = {"X-Repo-Commit": commit.sha, "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
                       "Accept-Ranges": "bytes"}
            start = self.headers.get("Range", "bytes=0-").removeprefix("bytes=").split("-")[0]
            if int(start or 0):
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                return self.send(data[int(start):], headers, body, status=206)
            self.send(data, headers, body)

    return Handler


class Standin:
    """The server in a thread: `with Standin(hub) as url:` (stopped on leaving)."""

    def __init__(self, hub: Hub):
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler(hub))
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()
