"""A Hub-compatible HTTP server on loopback, for testing ``push`` end to end without the real Hub.

Neither PyPI candidate works as an upload target here: hf-local-hub 3.0.0's wheel is only a client/CLI whose
server is a Go binary it does not ship, and olah 0.5.4 is a read-only mirror/proxy with no upload routes
(no preupload or commit endpoint). So this module implements the part of the Hub's HTTP API that
huggingface_hub's own client code uses to push and pull a model repo:

  POST /api/validate-yaml                        README metadata check (YAML syntax only)
  POST /api/repos/create                         create_repo (409 when it exists, as the Hub answers)
  POST /api/models/{repo}/branch/{branch}        create_branch
  POST /api/models/{repo}/preupload/{rev}        "lfs" for weights and files over `lfs_threshold`, else "regular"
  POST /{repo}.git/info/lfs/objects/batch        LFS batch API: upload + verify actions for objects not stored
  PUT  /lfs-upload/{oid}                         LFS object upload (refused unless its sha256 is the oid)
  POST /lfs-verify                               LFS verify (the object is stored, with that size)
  POST /api/models/{repo}/commit/{rev}           NDJSON commit: header + base64 files + lfsFile pointers
  GET  /api/models/{repo}/revision/{rev}         repo_info (snapshot_download)
  GET  /api/models/{repo}/tree/{rev}             list_repo_tree (snapshot_download)
  HEAD/GET /{repo}/resolve/{rev}/{path}          file download

Large files take the route real weights take: preupload answers "lfs" as the Hub does (by its default
.gitattributes patterns, and above a size), and the client then uploads them through the LFS batch API. The
Hub's newer Xet storage needs a content-addressed chunk server this module does not implement; tests disable
Xet on the client (``constants.HF_HUB_DISABLE_XET``), which makes huggingface_hub use the LFS protocol it
falls back to. Everything else goes through huggingface_hub's real request, error and retry code.
``mode`` makes it refuse every request with 401 or 403, or answer 500, to test the error paths.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse


@dataclass
class Repo:
    private: bool
    branches: dict[str, dict[str, bytes]] = field(default_factory=lambda: {"main": {}})
    heads: dict[str, str] = field(default_factory=lambda: {"main": hashlib.sha1(b"init").hexdigest()})
    commits: list[dict] = field(default_factory=list)


#: Suffixes the Hub's default .gitattributes stores in LFS (a subset: the ones a checkpoint folder can hold).
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".onnx", ".model", ".npy", ".npz", ".zip")
#: Above this size the Hub routes any file to LFS.
LFS_THRESHOLD = 10 * 1024 * 1024
#: The token the tests push with (``hub_env`` puts it in HF_TOKEN); no output may ever show it.
TOKEN = "hf_pushtestTOKEN0123456789abcdefghijklmn"


class FakeHub:
    def __init__(self, token: str, mode: str = "ok", lfs_threshold: int = LFS_THRESHOLD):
        self.token = token
        self.mode = mode
        self.lfs_threshold = lfs_threshold
        self.repos: dict[str, Repo] = {}
        self.requests: list[dict] = []
        self.validated: list[dict] = []
        self.lfs_objects: dict[str, bytes] = {}
        self.upload_modes: dict[str, str] = {}  # path in repo -> "lfs" | "regular", as preupload answered
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                hub._handle(self, "GET")

            def do_HEAD(self):
                hub._handle(self, "HEAD")

            def do_POST(self):
                hub._handle(self, "POST")

            def do_PUT(self):
                hub._handle(self, "PUT")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "FakeHub":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    # ------------------------------------------------------------------------------------------------------

    def _reply(self, handler, status: int, body=None, headers: dict | None = None, method: str = "GET") -> None:
        if isinstance(body, (dict, list)):
            data = json.dumps(body).encode()
            content_type = "application/json"
        else:
            data = body or b""
            content_type = "application/octet-stream"
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        handler.end_headers()
        if method != "HEAD":
            handler.wfile.write(data)

    def _error(self, handler, status: int, message: str, code: str | None = None, method: str = "GET") -> None:
        headers = {"X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._reply(handler, status, {"error": message}, headers, method)

    def _handle(self, handler, method: str) -> None:
        url = urlparse(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        auth = handler.headers.get("authorization", "")
        self.requests.append({"method": method, "path": url.path, "query": url.query, "auth": auth, "body": body})
        if self.mode == "401":
            return self._error(handler, 401, "Invalid credentials in Authorization header", method=method)
        if self.mode == "403":
            return self._error(handler, 403, "You don't have the rights to create a model under this namespace",
                               method=method)
        if self.mode == "500":
            return self._error(handler, 500, "Internal Error", method=method)
        authorized = auth == f"Bearer {self.token}"
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        try:
            if method == "PUT" and parts[0] == "lfs-upload" and len(parts) == 2:
                return self._lfs_upload(handler, parts[1], body)
            if method == "POST" and url.path == "/lfs-verify":
                return self._lfs_verify(handler, json.loads(body), authorized)
            if method == "POST" and len(parts) == 6 and parts[1].endswith(".git") and parts[2:] == ["info", "lfs", "objects", "batch"]:
                return self._lfs_batch(handler, f"{parts[0]}/{parts[1][:-4]}", json.loads(body), authorized)
            if method == "POST" and url.path == "/api/validate-yaml":
                return self._validate_yaml(handler, json.loads(body)["content"])
            if method == "POST" and url.path == "/api/repos/create":
                return self._create_repo(handler, json.loads(body), authorized)
            if parts[:2] == ["api", "models"] and len(parts) >= 6:
                repo_id, action, rest = "/".join(parts[2:4]), parts[4], parts[5:]
                return self._api(handler, method, repo_id, action, rest, body, authorized, parse_qs(url.query))
            if len(parts) >= 5 and parts[2] == "resolve":
                return self._resolve(handler, method, "/".join(parts[:2]), parts[3], "/".join(parts[4:]), authorized)
        except Exception as error:  # a bug here should show up as a failed request, not a hung client
            return self._error(handler, 500, f"fake hub: {type(error).__name__}: {error}", method=method)
        return self._error(handler, 404, f"no route {method} {url.path}", method=method)

    def _validate_yaml(self, handler, content: str):
        """The README front matter must parse as a YAML mapping (the Hub checks much more; this is the floor)."""
        import yaml

        front = content.split("---", 2)[1] if content.startswith("---") else ""
        try:
            data = yaml.safe_load(front) if front else {}
            if not isinstance(data, dict):
                raise ValueError("metadata is not a mapping")
        except (yaml.YAMLError, ValueError) as error:
            return self._reply(handler, 400, {"errors": [{"message": str(error)}]})
        self.validated.append(data)
        return self._reply(handler, 200, {"warnings": []})

    def _create_repo(self, handler, payload: dict, authorized: bool):
        if not authorized:
            return self._error(handler, 401, "Invalid credentials in Authorization header")
        repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
        if repo_id in self.repos:  # the Hub's 409 names the existing repo's url, which create_repo returns
            return self._reply(handler, 409, {"error": "You already created this model repo",
                                              "url": f"{self.endpoint}/{repo_id}"},
                               {"X-Error-Message": "You already created this model repo"})
        self.repos[repo_id] = Repo(private=bool(payload.get("private")) or payload.get("visibility") == "private")
        return self._reply(handler, 200, {"url": f"{self.endpoint}/{repo_id}", "name": repo_id})

    def _repo(self, handler, repo_id: str, authorized: bool, method: str = "GET"):
        repo = self.repos.get(repo_id)
        if repo is None or (repo.private and not authorized):
            self._error(handler, 404, "Repository not found", "RepoNotFound", method)
            return None
        return repo

    def _api(self, handler, method, repo_id, action, rest, body, authorized, query):
        repo = self._repo(handler, repo_id, authorized, method)
        if repo is None:
            return None
        revision = "/".join(rest)
        subpath = ""
        if action == "tree":  # /tree/{rev}/{path in repo}
            revision, subpath = rest[0], "/".join(rest[1:])
        if action in ("branch", "preupload", "commit") and not authorized:
            return self._error(handler, 401, "Invalid credentials in Authorization header")
        if action == "branch" and method == "POST":
            if revision in repo.branches:
                return self._error(handler, 409, "Reference already exists")
            start = (json.loads(body) if body else {}).get("startingPoint") or "main"
            repo.branches[revision] = dict(repo.branches[start])
            repo.heads[revision] = repo.heads[start]
            return self._reply(handler, 200, {})
        if revision not in repo.branches and revision not in repo.heads.values():
            return self._error(handler, 404, f"Invalid rev id: {revision}", "RevisionNotFound", method)
        branch = revision if revision in repo.branches else next(b for b, h in repo.heads.items() if h == revision)
        files = repo.branches[branch]
        if action == "preupload" and method == "POST":
            wanted = json.loads(body)["files"]
            answer = []
            for f in wanted:
                lfs = f["size"] > self.lfs_threshold or f["path"].lower().endswith(LFS_SUFFIXES)
                self.upload_modes[f["path"]] = "lfs" if lfs else "regular"
                answer.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                               "oid": None})
            return self._reply(handler, 200, {"files": answer})
        if action == "commit" and method == "POST":
            lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
            header = next(line["value"] for line in lines if line["key"] == "header")
            for line in lines:
                if line["key"] == "file":
                    value = line["value"]
                    files[value["path"]] = base64.b64decode(value["content"])
                elif line["key"] == "lfsFile":
                    value = line["value"]
                    if value["oid"] not in self.lfs_objects:
                        return self._error(handler, 400, f"LFS object {value['oid']} of {value['path']} was not uploaded")
                    files[value["path"]] = self.lfs_objects[value["oid"]]
                elif line["key"] in ("deletedFile", "deletedFolder"):
                    return self._error(handler, 400, f"fake hub does not support {line['key']}")
            oid = hashlib.sha1(json.dumps(sorted((p, hashlib.sha1(c).hexdigest()) for p, c in files.items())).encode()
                               + header["summary"].encode()).hexdigest()
            repo.heads[branch] = oid
            repo.commits.append({"branch": branch, "summary": header["summary"], "oid": oid})
            return self._reply(handler, 200, {"commitUrl": f"{self.endpoint}/{repo_id}/commit/{oid}",
                                              "commitOid": oid, "pullRequestUrl": None})
        if action == "revision" and method == "GET":
            return self._reply(handler, 200, {"id": repo_id, "modelId": repo_id, "sha": repo.heads[branch],
                                              "private": repo.private, "siblings": [{"rfilename": p} for p in sorted(files)]})
        if action == "tree" and method == "GET":
            recursive = query.get("recursive", ["false"])[0].lower() == "true"
            prefix = f"{subpath}/" if subpath else ""
            entries = [
                {"type": "file", "path": p, "size": len(c), "oid": hashlib.sha1(c).hexdigest()}
                for p, c in sorted(files.items())
                if p.startswith(prefix) and (recursive or "/" not in p[len(prefix):])
            ]
            if subpath and not any(p.startswith(prefix) for p in files):
                return self._error(handler, 404, f"{subpath} does not exist on {revision}", "EntryNotFound")
            return self._reply(handler, 200, entries)
        return self._error(handler, 404, f"no route {method} {action}")

    def _lfs_batch(self, handler, repo_id: str, payload: dict, authorized: bool):
        if not authorized:
            return self._error(handler, 401, "Invalid credentials in Authorization header")
        if repo_id not in self.repos:
            return self._error(handler, 404, "Repository not found", "RepoNotFound")
        objects = []
        for obj in payload["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in self.lfs_objects:  # the Hub sends no actions for an object it already holds
                entry["actions"] = {"upload": {"href": f"{self.endpoint}/lfs-upload/{obj['oid']}"},
                                    "verify": {"href": f"{self.endpoint}/lfs-verify"}}
            objects.append(entry)
        return self._reply(handler, 200, {"transfer": "basic", "objects": objects})

    def _lfs_upload(self, handler, oid: str, body: bytes):
        if hashlib.sha256(body).hexdigest() != oid:
            return self._error(handler, 400, "uploaded content does not match its oid")
        self.lfs_objects[oid] = body
        return self._reply(handler, 200, {})

    def _lfs_verify(self, handler, payload: dict, authorized: bool):
        if not authorized:
            return self._error(handler, 401, "Invalid credentials in Authorization header")
        stored = self.lfs_objects.get(payload["oid"])
        if stored is None or len(stored) != payload["size"]:
            return self._error(handler, 404, "LFS object not found")
        return self._reply(handler, 200, {})

    def _resolve(self, handler, method, repo_id, revision, path, authorized):
        repo = self._repo(handler, repo_id, authorized, method)
        if repo is None:
            return None
        branch = revision if revision in repo.branches else next(
            (b for b, h in repo.heads.items() if h == revision), None)
        if branch is None:
            return self._error(handler, 404, "Invalid rev id", "RevisionNotFound", method)
        content = repo.branches[branch].get(path)
        if content is None:
            return self._error(handler, 404, "Entry not found", "EntryNotFound", method)
        headers = {"X-Repo-Commit": repo.heads[branch], "ETag": f'"{hashlib.sha1(content).hexdigest()}"'}
        return self._reply(handler, 200, content, headers, method)
