"""A local stand-in for the Hugging Face hub, for tests (no network here): an HTTP server that serves model
and dataset repositories from a directory with the few endpoints that ``huggingface_hub.snapshot_download``
and ``datasets.load_dataset`` use.

    hub = HubStandIn(root)            # root/models/<owner>/<name>/..., root/datasets/<owner>/<name>/...
    with hub:                         # serves on 127.0.0.1:<port>
        env = {"HF_ENDPOINT": hub.endpoint, "HF_HOME": ...}

Every repository has one revision, ``main``, whose commit hash is derived from its files. ``requests``
records the paths asked for (tests check what was fetched).
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

KINDS = {"models": "models", "datasets": "datasets"}


class HubStandIn:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.requests: list[str] = []
        self._server: ThreadingHTTPServer | None = None

    @property
    def endpoint(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> HubStandIn:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):
                hub._handle(self, body=False)

            def do_GET(self):
                hub._handle(self, body=True)

            def do_POST(self):
                hub._handle(self, body=True)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    # -----------------------------------------------------------------------------------------

    def _repo(self, kind: str, owner: str, name: str) -> Path | None:
        path = self.root / kind / owner / name
        return path if path.is_dir() else None

    @staticmethod
    def _files(repo: Path) -> list[Path]:
        return sorted(path for path in repo.rglob("*") if path.is_file())

    def _commit(self, repo: Path) -> str:
        digest = hashlib.sha1()
        for path in self._files(repo):
            digest.update(str(path.relative_to(repo)).encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
        return digest.hexdigest()

    @staticmethod
    def _oid(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    def _entry(self, repo: Path, path: Path) -> dict:
        relative = str(path.relative_to(repo))
        if path.is_dir():
            return {
                "type": "directory",
                "path": relative,
                "oid": hashlib.sha1(relative.encode()).hexdigest(),
                "size": 0,
            }
        oid = self._oid(path)
        return {"type": "file", "path": relative, "oid": oid, "size": path.stat().st_size, "lfs": None}

    def _info(self, kind: str, repo_id: str, repo: Path) -> dict:
        commit = self._commit(repo)
        info = {
            "id": repo_id,
            "_id": repo_id,
            "sha": commit,
            "private": False,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "lastModified": "2024-01-01T00:00:00.000Z",
            "createdAt": "2024-01-01T00:00:00.000Z",
            "siblings": [{"rfilename": str(p.relative_to(repo))} for p in self._files(repo)],
        }
        if kind == "datasets":
            info["cardData"] = {}
        return info

    def _send_json(self, handler, value, body: bool) -> None:
        data = json.dumps(value).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        if body:
            handler.wfile.write(data)

    def _not_found(self, handler, code: str = "RepoNotFound") -> None:
        data = json.dumps({"error": code}).encode()
        handler.send_response(404)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("X-Error-Code", code)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _handle(self, handler, body: bool) -> None:
        path = unquote(urlsplit(handler.path).path)
        self.requests.append(f"{handler.command} {path}")
        parts = [part for part in path.split("/") if part]
        if handler.command == "POST":
            length = int(handler.headers.get("Content-Length") or 0)
            handler.rfile.read(length)
        # /api/{models,datasets}/{owner}/{name}[/revision/{rev}|/tree/{rev}/...|/paths-info/{rev}]
        if parts[:1] == ["api"] and len(parts) >= 4 and parts[1] in KINDS:
            kind, owner, name, rest = parts[1], parts[2], parts[3], parts[4:]
            repo = self._repo(kind, owner, name)
            if repo is None:
                return self._not_found(handler)
            if not rest or rest[0] == "revision":
                return self._send_json(handler, self._info(kind, f"{owner}/{name}", repo), body)
            if rest[0] == "tree":
                base = repo.joinpath(*rest[2:]) if len(rest) > 2 else repo
                if not base.is_dir():
                    return self._not_found(handler, "EntryNotFound")
                recursive = "recursive=true" in (urlsplit(handler.path).query or "").lower()
                children = base.rglob("*") if recursive else base.iterdir()
                return self._send_json(handler, [self._entry(repo, child) for child in sorted(children)], body)
            if rest[0] == "paths-info":
                entries = [self._entry(repo, child) for child in sorted(repo.rglob("*"))]
                return self._send_json(handler, entries, body)
            return self._not_found(handler)
        # /{owner}/{name}/resolve/{rev}/{file} or /datasets/{owner}/{name}/resolve/{rev}/{file}
        kind = "models"
        if parts[:1] == ["datasets"]:
            kind, parts = "datasets", parts[1:]
        if len(parts) >= 5 and parts[2] == "resolve":
            repo = self._repo(kind, parts[0], parts[1])
            if repo is None:
                return self._not_found(handler)
            target = repo.joinpath(*parts[4:])
            if not target.is_file():
                return self._not_found(handler, "EntryNotFound")
            data = target.read_bytes()
            handler.send_response(200)
            handler.send_header("Content-Length", str(len(data)))
            handler.send_header("ETag", f'"{self._oid(target)}"')
            handler.send_header("X-Repo-Commit", self._commit(repo))
            handler.send_header("Accept-Ranges", "bytes")
            handler.end_headers()
            if body:
                handler.wfile.write(data)
            return None
        return self._not_found(handler)
