"""A local Hugging Face Hub mirror: model repositories served from a folder, under their real repository ids.

For rehearsing the notebooks' pretrained path offline: put tiny checkpoints where the real ones would be
(``ROOT/Salesforce/blip2-opt-2.7b/...``), serve ``ROOT`` with :class:`HubMirror` and point ``HF_ENDPOINT`` (read when
huggingface_hub is imported) or an ``endpoint=`` argument at :attr:`HubMirror.url`: ``from_pretrained``,
``hf_hub_download`` and ``snapshot_download`` take the same code path as against huggingface.co, cache included.
Every request is logged (:attr:`HubMirror.requests`), so a test can assert exactly what a code path asked the hub for;
what the mirror does not speak is answered 404 and listed in :attr:`HubMirror.unexpected`.

Layout: ``ROOT/{owner}/{name}/<files, in subfolders too>``. Every repository is at one commit (``commit``), reachable
as revision ``main`` or by that sha. What it speaks, as huggingface_hub 2.4.0 and 2.5.0 ask for it:

    HEAD|GET /                                      200: the endpoint answers (``mmlab.settings.online`` probes it)
    HEAD|GET /{repo}/resolve/{rev}/{path}           the file: X-Repo-Commit, ETag = X-Linked-Etag (sha256),
                                                    X-Linked-Size, Content-Length; GET honours ``Range: bytes=N-``
    GET      /api/models/{repo}[/revision/{rev}]    model info (``blobs=true``: size, blobId, lfs per sibling)
    GET      /api/models/{repo}/tree/{rev}[/{path}] the folder listing (``recursive=true``: all of it), one page
    GET      /api/agent-harnesses                   an empty registry (huggingface_hub fetches it once a day per HF_HOME)

Errors as the hub sends them: 404 with ``X-Error-Code`` RepoNotFound, RevisionNotFound or EntryNotFound (with
X-Repo-Commit, so the client caches the miss). Every file is described as an LFS file and never with Xet headers,
so clients take the plain HTTP download. Standard library only: importing this costs no torch, no huggingface_hub.

    python -m mmlab.tools.hub_mirror ROOT [--port N]      # then: export HF_ENDPOINT=<the printed url>
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import parse_qs, unquote, urlsplit

COMMIT = "0123456789abcdef0123456789abcdef01234567"
_COMMIT_RE = re.compile(r"[0-9a-f]{40}")  # what huggingface_hub takes for a commit (anything else is a branch)
_RANGE_RE = re.compile(r"bytes=(\d+)-(\d*)")
_TRUE = {"1", "true", "True"}
_DATE = "2024-01-01T00:00:00.000Z"  # fixed, so that answers do not depend on file times
# what ModelInfo reads besides id, sha and siblings: an ordinary public repository
_PUBLIC = dict(private=False, disabled=False, gated=False, tags=[], downloads=0, likes=0, lastModified=_DATE, createdAt=_DATE)


@dataclass(frozen=True)
class RepoFile:
    """One file of a repository, described as the hub describes an LFS file."""

    path: str  # in the repository, "/"-separated
    local: Path
    size: int
    sha256: str  # the LFS oid: the file's etag
    pointer_size: int  # the git-lfs pointer the hub keeps in git in the file's place
    oid: str  # the git blob id of that pointer

    def tree_entry(self) -> dict:
        lfs = {"oid": self.sha256, "size": self.size, "pointerSize": self.pointer_size}
        return {"type": "file", "oid": self.oid, "size": self.size, "path": self.path, "lfs": lfs}

    def sibling(self, blobs: bool) -> dict:
        if not blobs:
            return {"rfilename": self.path}
        lfs = {"sha256": self.sha256, "size": self.size, "pointerSize": self.pointer_size}
        return {"rfilename": self.path, "size": self.size, "blobId": self.oid, "lfs": lfs}


@dataclass
class _Answer:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    span: tuple[Path, int, int] | None = None  # (file, offset, length): a slice of a file, sent instead of body


def _json(status: int, data: object, headers: dict[str, str] | None = None) -> _Answer:
    return _Answer(status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(data).encode())


class _HubError(Exception):
    """A 404 as the hub sends it: huggingface_hub maps ``X-Error-Code`` to RepositoryNotFoundError and the like."""

    def __init__(self, code: str, message: str, commit: str | None = None) -> None:
        headers = {"X-Error-Code": code, "X-Error-Message": message}
        if commit is not None:  # huggingface_hub records the miss under this commit (.no_exist) and skips it next time
            headers["X-Repo-Commit"] = commit
        self.answer = _json(404, {"error": message}, headers)


@functools.cache  # keyed by size and mtime too: each version of a file is hashed once
def _sha256(local: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(local, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class HubMirror:
    """Serves ``root``'s repositories on ``http://127.0.0.1:<port>`` from a daemon thread until :meth:`stop`."""

    def __init__(self, root: str | Path, commit: str = COMMIT, *, port: int = 0) -> None:
        if not _COMMIT_RE.fullmatch(commit):
            raise ValueError(f"commit must be 40 lowercase hex digits, got {commit!r}")
        self.root = Path(root)
        self.commit = commit
        self._lock = threading.Lock()
        self._log: list[tuple[str, str, float]] = []  # (method, path, time.time()) as requests arrive
        self._unmatched: set[int] = set()  # positions in _log of the requests no route answered
        self._server = _Server(("127.0.0.1", port), _Handler)
        self._server.mirror = self
        self._thread = threading.Thread(target=self._server.serve_forever, name="hub-mirror", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def requests(self) -> list[tuple[str, str]]:
        """Every request so far, in arrival order: (method, URL path without the query, percent-decoded)."""
        with self._lock:
            return [(method, path) for method, path, _ in self._log]

    @property
    def request_times(self) -> list[float]:
        """When each of :attr:`requests` arrived, as ``time.time()``: comparable with stamps taken in other processes."""
        with self._lock:
            return [arrived for _, _, arrived in self._log]

    @property
    def unexpected(self) -> list[tuple[str, str]]:
        """The requests that matched no route (answered 404 with a JSON error)."""
        with self._lock:
            return [(method, path) for i, (method, path, _) in enumerate(self._log) if i in self._unmatched]

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def __enter__(self) -> HubMirror:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.stop()

    # -- what the hub answers -------------------------------------------------------------------------------------

    def _answer(self, method: str, target: str, range_header: str | None = None) -> _Answer:
        """The answer to ``method target`` (target = path and query, as sent), logged as it arrives."""
        url = urlsplit(target)
        # Split before decoding: huggingface_hub percent-encodes "/" inside a revision or a tree path as one segment.
        segments = [unquote(part) for part in url.path.split("/")[1:]]
        query = parse_qs(url.query)
        with self._lock:  # logged before it is answered: the log is in arrival order even when answers take a while
            self._log.append((method, unquote(url.path), time.time()))
            position = len(self._log) - 1
        try:
            answer = self._route(method, segments, query, range_header)
        except _HubError as error:
            answer = error.answer
        if answer is None:
            with self._lock:
                self._unmatched.add(position)
            answer = _json(404, {"error": f"hub mirror: no route for {method} {unquote(url.path)}"})
        return answer

    def _route(self, method: str, seg: list[str], query: dict[str, list[str]], range_header: str | None) -> _Answer | None:
        reads = method in ("HEAD", "GET")
        if seg in ([], [""]) and reads:
            return _Answer(200, {"Content-Type": "text/plain"}, b"hub mirror\n")
        if seg == ["api", "agent-harnesses"] and method == "GET":  # an empty registry: no AI agent to name in User-Agent
            return _json(200, {"standardEnvVars": [], "harnesses": {}})
        if len(seg) >= 5 and seg[0] != "api" and seg[2] == "resolve" and reads:
            return self._resolve(method, "/".join(seg[:2]), seg[3], "/".join(seg[4:]), range_header)
        if len(seg) < 4 or seg[:2] != ["api", "models"] or method != "GET":
            return None
        repo, rest = "/".join(seg[2:4]), seg[4:]
        if not rest:
            return self._model_info(repo, "main", query)
        if rest[0] == "revision" and len(rest) == 2:
            return self._model_info(repo, rest[1], query)
        if rest[0] == "tree" and len(rest) >= 2:
            return self._tree(repo, rest[1], "/".join(rest[2:]), query.get("recursive", [""])[0] in _TRUE)
        return None

    def _files(self, repo: str, revision: str) -> dict[str, RepoFile]:
        """The repository's files by path; raises the hub's RepoNotFound / RevisionNotFound."""
        folder = self.root / repo
        if any(part.startswith(".") for part in repo.split("/")) or not folder.is_dir():  # nothing outside root
            raise _HubError("RepoNotFound", "Repository not found")
        if revision not in ("main", self.commit):
            raise _HubError("RevisionNotFound", f"Invalid rev id: {revision}")
        files = {}
        for local in sorted(folder.rglob("*")):
            path = local.relative_to(folder).as_posix()
            if local.is_file() and ".git" not in path.split("/"):
                files[path] = self._describe(path, local)
        return files

    def _describe(self, path: str, local: Path) -> RepoFile:
        stat = local.stat()
        sha256 = _sha256(str(local), stat.st_size, stat.st_mtime_ns)
        pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {stat.st_size}\n".encode()
        oid = hashlib.sha1(b"blob %d\0" % len(pointer) + pointer).hexdigest()  # git's id of the pointer it stores
        return RepoFile(path, local, stat.st_size, sha256, len(pointer), oid)

    def _resolve(self, method: str, repo: str, revision: str, path: str, range_header: str | None) -> _Answer:
        file = self._files(repo, revision).get(path)
        if file is None:
            raise _HubError("EntryNotFound", "Entry not found", commit=self.commit)
        headers = {
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
            "X-Repo-Commit": self.commit,
            "ETag": f'"{file.sha256}"',
            "X-Linked-Etag": f'"{file.sha256}"',
            "X-Linked-Size": str(file.size),
        }
        wanted = _RANGE_RE.fullmatch(range_header.strip()) if range_header and method == "GET" else None
        if wanted is None:
            return _Answer(200, headers, span=(file.local, 0, file.size))
        # huggingface_hub sends "bytes=N-" to resume a download cut short (http_get); "bytes=N-M" costs nothing more
        start, end = int(wanted[1]), min(int(wanted[2]) + 1, file.size) if wanted[2] else file.size
        if start >= end:
            return _Answer(416, {"Content-Range": f"bytes */{file.size}"})
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{file.size}"
        return _Answer(206, headers, span=(file.local, start, end - start))

    def _model_info(self, repo: str, revision: str, query: dict[str, list[str]]) -> _Answer:
        files = self._files(repo, revision)
        blobs = query.get("blobs", [""])[0] in _TRUE  # files_metadata=True: size, blobId and lfs per sibling
        siblings = [file.sibling(blobs) for file in files.values()]
        info = {"id": repo, "modelId": repo, "author": repo.split("/")[0], "sha": self.commit, **_PUBLIC, "siblings": siblings}
        if "expand" in query:  # the hub then sends only the properties asked for
            info = {key: value for key, value in info.items() if key in ("id", *query["expand"])}
        return _json(200, info)

    def _tree(self, repo: str, revision: str, folder: str, recursive: bool) -> _Answer:
        files = self._files(repo, revision)
        prefix = f"{folder.strip('/')}/" if folder.strip("/") else ""
        inside = [file for path, file in files.items() if path.startswith(prefix)]
        if prefix and not inside:
            raise _HubError("EntryNotFound", "Entry not found", commit=self.commit)  # what list_repo_tree documents
        listed: dict[str, RepoFile] = {}
        folders: dict[str, list[RepoFile]] = {}  # each folder listed -> the files under it (for its id)
        for file in inside:
            parts = file.path[len(prefix) :].split("/")
            if recursive or len(parts) == 1:
                listed[file.path] = file
            for depth in range(1, len(parts) if recursive else min(len(parts), 2)):
                folders.setdefault(prefix + "/".join(parts[:depth]), []).append(file)
        entries = [file.tree_entry() for file in listed.values()]
        for path, under in folders.items():  # a stable id that changes when the folder's content does, like git's
            oid = hashlib.sha1("".join(f"{f.path} {f.oid}\n" for f in under).encode()).hexdigest()
            entries.append({"type": "directory", "oid": oid, "path": path})
        return _json(200, sorted(entries, key=lambda entry: entry["path"]))


class _Server(ThreadingHTTPServer):
    mirror: HubMirror


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "hub-mirror"

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)  # a request body is never used, but is read so the client can finish sending it
        answer = self.server.mirror._answer(self.command, self.path, self.headers.get("Range"))
        self.send_response(answer.status)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(answer.span[2] if answer.span else len(answer.body)))
        self.end_headers()
        if self.command == "HEAD":
            return
        try:
            if answer.span is None:
                self.wfile.write(answer.body)
                return
            local, offset, left = answer.span
            with local.open("rb") as f:
                f.seek(offset)
                while left > 0 and (chunk := f.read(min(left, 1 << 20))):
                    self.wfile.write(chunk)
                    left -= len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            return  # the client hung up: nothing more to send

    do_HEAD = do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    def log_message(self, format: str, *args: object) -> None:
        pass  # the mirror's own log is HubMirror.requests


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmlab.tools.hub_mirror", description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="folder of {owner}/{name}/ repositories")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free one)")
    parser.add_argument("--commit", default=COMMIT, help="the commit sha every repository is at")
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        parser.error(f"{args.root} is not a folder")
    with HubMirror(args.root, args.commit, port=args.port) as mirror:
        repos = sorted(path.relative_to(args.root).as_posix() for path in args.root.glob("*/*") if path.is_dir())
        print(f"hub mirror of {args.root} ({', '.join(repos) or 'no repositories'}) at {mirror.url}")
        print(f"export HF_ENDPOINT={mirror.url}    # before huggingface_hub is imported; Ctrl-C stops", flush=True)
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a maintainer stops it: then the log
            threading.Event().wait()
        print(f"\n{len(mirror.requests)} requests ({len(mirror.unexpected)} matched no route, marked ?):")
        for i, (method, path) in enumerate(mirror.requests):
            print(f"{'?' if i in mirror._unmatched else ' '} {method:4} {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
