"""The local hub mirror (mmlab.tools.hub_mirror), driven by huggingface_hub itself: downloads byte for byte, the cache
taking over on a second call, the hub's errors, model info, tree listings, snapshots, and the exact request log."""

import hashlib
import http.client
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from huggingface_hub import (
    HfApi,
    constants,
    get_hf_file_metadata,
    hf_hub_download,
    hf_hub_url,
    snapshot_download,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile, RepoFolder

from mmlab.tools.hub_mirror import COMMIT, HubMirror

REPO = "acme/tiny"
FILES = {
    "config.json": b'{"hidden_size": 4}\n',
    "README.md": b"# tiny\n",
    "sub/weights.bin": bytes(range(256)) * 3,
    "sub/deeper/my notes.txt": b"notes\n",
}


@pytest.fixture
def root(tmp_path):
    for path, data in FILES.items():
        (tmp_path / "hub" / REPO / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "hub" / REPO / path).write_bytes(data)
    return tmp_path / "hub"


@pytest.fixture
def mirror(root, tmp_path, monkeypatch):
    # huggingface_hub reads its environment at import: pin what matters here on its constants, and send no token.
    # No telemetry: it would fetch {HF_ENDPOINT}/api/agent-harnesses from huggingface.co into the real HF_HOME.
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-home" / "hub"))
    with HubMirror(root) as served:
        yield served


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


def download(mirror, cache, filename, repo=REPO, **kwargs):
    return hf_hub_download(repo, filename, endpoint=mirror.url, cache_dir=cache, token=False, **kwargs)


def api(mirror):
    return HfApi(endpoint=mirror.url, token=False)


def test_downloads_are_byte_for_byte_under_the_mirrors_commit(mirror, cache):
    for filename in ("config.json", "sub/weights.bin"):
        path = download(mirror, cache, filename)
        assert open(path, "rb").read() == FILES[filename]
        assert f"/snapshots/{COMMIT}/{filename}" in path.replace("\\", "/")
        assert Path(path).resolve().name == hashlib.sha256(FILES[filename]).hexdigest(), "the blob is named by its etag"
    assert (cache / "models--acme--tiny" / "refs" / "main").read_text() == COMMIT
    assert open(download(mirror, cache, "weights.bin", subfolder="sub"), "rb").read() == FILES["sub/weights.bin"]


def test_second_download_is_served_from_the_cache(mirror, cache):
    download(mirror, cache, "sub/weights.bin")
    first = mirror.requests
    assert first == [("HEAD", "/acme/tiny/resolve/main/sub/weights.bin"), ("GET", "/acme/tiny/resolve/main/sub/weights.bin")]
    download(mirror, cache, "sub/weights.bin")
    assert mirror.requests[len(first) :] == [("HEAD", "/acme/tiny/resolve/main/sub/weights.bin")], "only the etag check"


def test_a_missing_file_raises_entry_not_found_and_the_miss_is_cached(mirror, cache):
    with pytest.raises(EntryNotFoundError):
        download(mirror, cache, "nope.json")
    # the 404 carried X-Repo-Commit: huggingface_hub remembers the miss under that commit
    assert (cache / "models--acme--tiny" / ".no_exist" / COMMIT / "nope.json").is_file()


def test_an_unknown_repo_raises_repository_not_found(mirror, cache):
    with pytest.raises(RepositoryNotFoundError):
        download(mirror, cache, "config.json", repo="acme/nothing")
    with pytest.raises(RepositoryNotFoundError):
        api(mirror).model_info("acme/nothing")
    with pytest.raises(RevisionNotFoundError):
        download(mirror, cache, "config.json", revision="v2")
    with pytest.raises(RevisionNotFoundError):
        api(mirror).model_info(REPO, revision="refs/pr/1")  # sent as one segment: refs%2Fpr%2F1
    assert mirror.unexpected == [], "answered by a route, with the hub's error codes"
    assert mirror.requests[-1] == ("GET", "/api/models/acme/tiny/revision/refs/pr/1")


def test_model_info(mirror):
    info = api(mirror).model_info(REPO)
    assert (info.id, info.sha, info.private, info.gated, info.disabled) == (REPO, COMMIT, False, False, False)
    assert sorted(sibling.rfilename for sibling in info.siblings) == sorted(FILES)
    assert info.last_modified is not None and info.created_at is not None
    detailed = api(mirror).model_info(REPO, revision=COMMIT, files_metadata=True)
    for sibling in detailed.siblings:
        data = FILES[sibling.rfilename]
        assert (sibling.size, sibling.lfs.size, sibling.lfs.sha256) == (len(data), len(data), hashlib.sha256(data).hexdigest())
        assert len(sibling.blob_id) == 40
    assert mirror.requests == [("GET", "/api/models/acme/tiny"), ("GET", f"/api/models/acme/tiny/revision/{COMMIT}")]


def test_list_repo_tree(mirror):
    entries = list(api(mirror).list_repo_tree(REPO, recursive=True))
    files = {entry.path: entry for entry in entries if isinstance(entry, RepoFile)}
    assert sorted(files) == sorted(FILES)
    assert {entry.path for entry in entries if isinstance(entry, RepoFolder)} == {"sub", "sub/deeper"}
    for path, entry in files.items():
        assert (entry.size, entry.lfs.sha256) == (len(FILES[path]), hashlib.sha256(FILES[path]).hexdigest())
    top = {entry.path: type(entry) for entry in api(mirror).list_repo_tree(REPO, path_in_repo="sub")}
    assert top == {"sub/weights.bin": RepoFile, "sub/deeper": RepoFolder}, "one level without recursive"
    assert sorted(api(mirror).list_repo_files(REPO)) == sorted(FILES)
    with pytest.raises(EntryNotFoundError):
        list(api(mirror).list_repo_tree(REPO, path_in_repo="nope"))


def test_snapshot_download_fetches_the_allowed_files_only(mirror, cache):
    folder = snapshot_download(REPO, endpoint=mirror.url, cache_dir=cache, token=False, allow_patterns=["*.json", "sub/*.bin"])
    got = {path.relative_to(folder).as_posix(): path.read_bytes() for path in Path(folder).rglob("*") if path.is_file()}
    assert got == {"config.json": FILES["config.json"], "sub/weights.bin": FILES["sub/weights.bin"]}


def test_file_exists(mirror):
    assert api(mirror).file_exists(REPO, "config.json") and api(mirror).file_exists(REPO, "sub/weights.bin")
    assert not api(mirror).file_exists(REPO, "nope.json")
    assert not api(mirror).file_exists("acme/nothing", "config.json")


def test_get_hf_file_metadata(mirror):
    url = hf_hub_url(REPO, "sub/weights.bin", endpoint=mirror.url)
    meta = get_hf_file_metadata(url, token=False)
    data = FILES["sub/weights.bin"]
    assert (meta.commit_hash, meta.etag, meta.size) == (COMMIT, hashlib.sha256(data).hexdigest(), len(data))
    assert meta.location == url and meta.xet_file_data is None, "a plain HTTP download, no redirect, no Xet"


def test_the_request_log_is_exactly_what_was_asked(mirror, cache):
    started = time.time()
    api(mirror).model_info(REPO)
    download(mirror, cache, "config.json")
    download(mirror, cache, "config.json")
    download(mirror, cache, "sub/deeper/my notes.txt")
    with pytest.raises(EntryNotFoundError):
        download(mirror, cache, "nope.json")
    # config.json is already in the snapshot of this commit: only sub/weights.bin goes over the wire
    snapshot_download(REPO, endpoint=mirror.url, cache_dir=cache, token=False, allow_patterns=["config.json", "sub/*.bin"], max_workers=1)
    urllib.request.urlopen(urllib.request.Request(mirror.url, method="HEAD"), timeout=5)
    assert mirror.requests == [
        ("GET", "/api/models/acme/tiny"),
        ("HEAD", "/acme/tiny/resolve/main/config.json"),
        ("GET", "/acme/tiny/resolve/main/config.json"),
        ("HEAD", "/acme/tiny/resolve/main/config.json"),
        ("HEAD", "/acme/tiny/resolve/main/sub/deeper/my notes.txt"),  # sent as my%20notes.txt
        ("GET", "/acme/tiny/resolve/main/sub/deeper/my notes.txt"),
        ("HEAD", "/acme/tiny/resolve/main/nope.json"),
        ("GET", "/api/models/acme/tiny/revision/main"),
        ("GET", f"/api/models/acme/tiny/tree/{COMMIT}"),
        ("HEAD", f"/acme/tiny/resolve/{COMMIT}/sub/weights.bin"),
        ("GET", f"/acme/tiny/resolve/{COMMIT}/sub/weights.bin"),
        ("HEAD", "/"),
    ]
    assert mirror.unexpected == []
    stamps, now = mirror.request_times, time.time()  # when each request arrived: in order, within the test
    assert len(stamps) == len(mirror.requests) and started <= stamps[0] and stamps == sorted(stamps) and stamps[-1] <= now


def test_an_unknown_route_is_a_404_in_unexpected(mirror):
    with pytest.raises(HfHubHTTPError) as caught:
        api(mirror).list_repo_commits(REPO)  # what transformers' safetensors auto-conversion asks first
    assert caught.value.response.status_code == 404 and "no route" in str(caught.value)
    with pytest.raises(urllib.error.HTTPError) as raw:
        urllib.request.urlopen(f"{mirror.url}/api/datasets/acme/tiny?x=1", timeout=5)
    assert raw.value.code == 404 and "no route" in json.loads(raw.value.read())["error"]
    assert mirror.unexpected == [("GET", "/api/models/acme/tiny/commits/main"), ("GET", "/api/datasets/acme/tiny")]
    assert mirror.requests == mirror.unexpected


def test_the_agent_harness_registry_is_empty(mirror, monkeypatch):
    # fetched from HF_ENDPOINT (not endpoint=) by huggingface_hub's User-Agent, once a day per HF_HOME
    from huggingface_hub.utils import _detect_agent

    monkeypatch.setattr(constants, "ENDPOINT", mirror.url)
    assert _detect_agent._fetch_registry() == {"standardEnvVars": [], "harnesses": {}}
    assert mirror.requests == [("GET", "/api/agent-harnesses")] and mirror.unexpected == []


def test_range_and_headers_over_raw_http(mirror):
    data = FILES["sub/weights.bin"]
    connection = http.client.HTTPConnection("127.0.0.1", int(mirror.url.rsplit(":", 1)[1]), timeout=5)
    connection.request("GET", "/acme/tiny/resolve/main/sub/weights.bin", headers={"Range": "bytes=700-"})
    response = connection.getresponse()
    assert (response.status, response.read()) == (206, data[700:])
    assert response.headers["Content-Range"] == f"bytes 700-{len(data) - 1}/{len(data)}"
    assert response.headers["X-Linked-Etag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    assert response.headers["X-Linked-Size"] == str(len(data)) and response.headers["X-Repo-Commit"] == COMMIT
    connection.close()


def test_nothing_outside_root_is_served(mirror):
    # as a repo id, "../hub" is the mirror's root itself, and "acme/tiny/config.json" a file under it
    connection = http.client.HTTPConnection("127.0.0.1", int(mirror.url.rsplit(":", 1)[1]), timeout=5)
    connection.request("GET", "/%2E%2E/hub/resolve/main/acme/tiny/config.json")
    response = connection.getresponse()
    assert (response.status, response.headers["X-Error-Code"]) == (404, "RepoNotFound")
    connection.close()


def test_imports_only_the_standard_library():
    code = "import sys, mmlab.tools.hub_mirror; print(sorted({'torch', 'huggingface_hub', 'httpx', 'numpy'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


def test_main_serves_until_ctrl_c_and_prints_the_log(root):
    process = subprocess.Popen([sys.executable, "-m", "mmlab.tools.hub_mirror", str(root)], stdout=subprocess.PIPE, text=True)
    try:
        first = process.stdout.readline()
        assert "acme/tiny" in first
        url = first.rsplit(" at ", 1)[1].strip()
        assert urllib.request.urlopen(f"{url}/acme/tiny/resolve/main/config.json", timeout=5).read() == FILES["config.json"]
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=10)
    finally:
        process.kill()
    assert process.returncode == 0
    assert "1 requests (0 matched no route" in out and "GET  /acme/tiny/resolve/main/config.json" in out
