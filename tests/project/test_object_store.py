"""The object store behaves the same on a local folder and on a real S3-compatible server."""

from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from resources.object_store import ObjectStore
from store.backends import ArtifactMissing
from store.keys import MANIFEST


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    if request.param == "local":
        yield ObjectStore(url="file://store", root=str(tmp_path), cache_dir="cache")
        return
    request.getfixturevalue("s3_env")
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = f"factory-{tmp_path.name.lower().replace('_', '-')[-40:]}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
    yield ObjectStore(url=f"s3://{bucket}/prod", root=str(tmp_path), cache_dir="cache",
                      endpoint_url=endpoint)


def make_artifact(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "weights.bin").write_bytes(b"\x00\x01" * 4096)
    (root / "sub" / "config.json").write_text('{"r": 8}')
    return root


def test_folder_round_trip(store: ObjectStore, tmp_path: Path) -> None:
    src = make_artifact(tmp_path / "src")
    manifest = store.put_dir("adapter/a/v1", src, version="v1")
    assert set(manifest["files"]) == {"weights.bin", "sub/config.json"}
    local = store.local_dir("adapter/a/v1")
    assert (local / "weights.bin").read_bytes() == (src / "weights.bin").read_bytes()
    assert (local / "sub" / "config.json").read_text() == '{"r": 8}'
    assert store.list("adapter/a/v1/") == sorted(
        ["adapter/a/v1/weights.bin", "adapter/a/v1/sub/config.json", f"adapter/a/v1/{MANIFEST}"])


def test_crash_mid_upload_leaves_nothing_that_looks_complete(
        store: ObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = make_artifact(tmp_path / "src")
    real_put = store.backend.put_file
    calls = {"n": 0}

    def dying_put(key: str, path: Path) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise ConnectionError("network gone mid-upload")
        real_put(key, path)

    monkeypatch.setattr(store.backend, "put_file", dying_put)
    with pytest.raises(ConnectionError):
        store.put_dir("adapter/a/v2", src)
    assert not store.is_complete("adapter/a/v2")
    with pytest.raises(ArtifactMissing, match=r"missing _MANIFEST\.json"):
        store.local_dir("adapter/a/v2")


def test_refs_point_at_latest_version(store: ObjectStore) -> None:
    with pytest.raises(ArtifactMissing, match="no 'adapter/a' has been materialized"):
        store.read_ref("adapter/a")
    store.write_ref("adapter/a", {"version": "v1"})
    store.write_ref("adapter/a", {"version": "v2"})
    assert store.read_ref("adapter/a")["version"] == "v2"


def test_delete_prefix_removes_manifest_first(store: ObjectStore, tmp_path: Path) -> None:
    store.put_dir("dataset/d/v1", make_artifact(tmp_path / "src"))
    store.put_dir("dataset/d/v10", make_artifact(tmp_path / "src2"))
    store.delete_prefix("dataset/d/v1")
    assert store.list("dataset/d/v1/") == []
    assert store.is_complete("dataset/d/v10")


def test_local_keys_cannot_escape_the_store(tmp_path: Path) -> None:
    store = ObjectStore(url="file://store", root=str(tmp_path))
    with pytest.raises(ValueError, match=r"'\.\./outside\.json' would be written outside"):
        store.put_json("../outside.json", {})
    assert not (tmp_path / "outside.json").exists()


def test_s3_download_is_verified_and_cached(s3_endpoint: str, s3_env: None,
                                            tmp_path: Path) -> None:
    """Local folders are read in place; S3 folders are downloaded once into the cache."""
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="cache-test")
    store = ObjectStore(url="s3://cache-test/prod", root=str(tmp_path), cache_dir="cache",
                        endpoint_url=s3_endpoint)
    store.put_dir("base_model/m/v1", make_artifact(tmp_path / "src"))
    first = store.local_dir("base_model/m/v1")
    assert first.is_relative_to(tmp_path / "cache")
    (first / "weights.bin").write_bytes(b"tampered")  # a cached copy is trusted once complete
    assert store.local_dir("base_model/m/v1") == first


def test_manifest_names_that_would_leave_the_folder_are_refused(s3_endpoint: str, s3_env: None,
                                                               tmp_path: Path) -> None:
    """A tampered manifest in S3 (file names or digest with '..') cannot make a download write
    outside the cache; the local store reads in place and refuses such keys itself (above)."""
    from store.paths import UnsafePath

    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="tampered")
    store = ObjectStore(url="s3://tampered/prod", root=str(tmp_path / "root"), cache_dir="cache",
                        endpoint_url=s3_endpoint)
    sha = "0" * 64
    for files, digest, named in (({"../../../../escaped.txt": {"size": 1, "sha256": sha}},
                                  "d" * 64, "escaped.txt"),
                                 ({"ok.txt": {"size": 1, "sha256": sha}}, "../../escaped",
                                  "digest")):
        store.put_json(f"adapter/evil/v1/{MANIFEST}", {"files": files, "digest": digest})
        with pytest.raises(UnsafePath, match=named):
            store.local_dir("adapter/evil/v1")
    assert not list(tmp_path.parent.rglob("escaped*"))


def test_s3_locations_and_listings_mean_one_thing_everywhere(s3_endpoint: str,
                                                           s3_env: None) -> None:
    """store/s3.py is read by dataset sources, watchers, the store and the staging: a trailing
    '/' means that folder only, folder placeholders are no objects, a bad URL is refused."""
    from store.s3 import objects, split_url

    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket="listing")
    for key in ("docs/a.txt", "docs/sub/b.txt", "docs/", "docs-old/c.txt"):
        client.put_object(Bucket="listing", Key=key, Body=b"x")
    bucket, prefix = split_url("s3://listing/docs/")
    assert (bucket, prefix) == ("listing", "docs/")
    assert [o["Key"] for o in objects(client, bucket, prefix)] == ["docs/a.txt", "docs/sub/b.txt"]
    assert len(list(objects(client, bucket, "docs"))) == 3  # no slash: docs-old/ too
    for bad in ("listing/docs", "s3:///docs", "file://listing"):
        with pytest.raises(ValueError, match="not an S3 location"):
            split_url(bad)


def test_a_model_card_can_grow_after_publishing_and_every_file_still_verifies(
        store: ObjectStore, tmp_path: Path) -> None:
    """The card (README.md) is rewritten as an adapter is evaluated and promoted; the weights'
    digest stays, the manifest's checksum follows the card, cached copies get the new card."""
    import hashlib

    src = make_artifact(tmp_path / "src")
    (src / "README.md").write_text("trained")
    digest = store.put_dir("adapter/a/v1", src)["digest"]
    cached = store.local_dir("adapter/a/v1")
    store.replace_card("adapter/a/v1", "trained, evaluated")
    manifest = store.manifest("adapter/a/v1")
    assert manifest["digest"] == digest
    card = store.backend.get_bytes("adapter/a/v1/README.md")
    assert card == b"trained, evaluated"
    assert manifest["files"]["README.md"]["sha256"] == hashlib.sha256(card).hexdigest()
    assert (store.local_dir("adapter/a/v1") / "README.md").read_bytes() == card
    assert (cached / "README.md").read_bytes() == card


def test_readers_get_a_published_folder_only_when_every_file_matches_its_manifest(
        store: ObjectStore, tmp_path: Path) -> None:
    """What replicas and the gateway read with (store/reader.py): a verified copy, or an
    error naming the file that changed, and nothing left behind."""
    from store.reader import ArtifactReader, Unverified

    store.put_dir("adapter/a/v1", make_artifact(tmp_path / "src"))
    reader = ArtifactReader(store.url if store.url.startswith("s3://")
                            else f"file://{tmp_path / 'store'}", store.endpoint_url)
    copy = tmp_path / "copy" / "v1"
    manifest = reader.fetch_verified("adapter/a/v1", copy)
    assert (copy / "weights.bin").read_bytes() == b"\x00\x01" * 4096
    assert manifest == store.manifest("adapter/a/v1")
    store.backend.put_bytes("adapter/a/v1/sub/config.json", b'{"r": 64}')
    with pytest.raises(Unverified, match=r"adapter/a/v1/sub/config.json: sha256 .* does not"):
        reader.fetch_verified("adapter/a/v1", tmp_path / "copy" / "again")
    assert not (tmp_path / "copy" / "again").exists()
    assert not list((tmp_path / "copy").glob("*.partial-*"))
    with pytest.raises(Unverified, match=r"no _MANIFEST\.json"):
        reader.fetch_verified("adapter/a/v9", tmp_path / "copy" / "v9")
    assert reader.read("adapter/a/none") is None
