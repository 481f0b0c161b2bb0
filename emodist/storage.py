"""Object storage in one place: fsspec options from `StorageConfig`, access checks with
clear errors, and scrubbing of secrets from messages.

Credentials are never part of the config or of any row. They come from where the AWS
SDK looks for them (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN,
AWS_PROFILE or `storage.profile` with ~/.aws, instance roles); AWS_ENDPOINT_URL(_S3)
and AWS_REGION are honoured when the config leaves `storage.endpoint_url` /
`storage.region` empty. Every access goes through `filesystem(uri, cfg)`: the options
are passed explicitly, never written into fsspec's process-wide config, so two runs in
one process with different endpoints each reach their own. Ray workers receive the
Config object (stage constructors get it) and derive the same options from it; they take credentials
from their own environment (on a local Ray, the driver's environment when Ray started;
on a cluster, the nodes' roles or variables).
"""
from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterable, Iterator
from typing import Any

# Seconds to wait for a TCP connection / for a response; with the retries these bound
# how long an unreachable endpoint can stall a run before it fails with a clear error.
CONNECT_TIMEOUT_S = 5
READ_TIMEOUT_S = 60

# Variables whose values are secrets (or identify one) and must never be printed.
SECRET_ENV = (
    "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ACCESS_KEY_ID",
    "AWS_WEB_IDENTITY_TOKEN", "GOOGLE_OAUTH_ACCESS_TOKEN", "AZURE_STORAGE_KEY",
    "AZURE_STORAGE_SAS_TOKEN", "AZURE_CLIENT_SECRET",
)


class SourceError(ValueError):
    """An input or output location cannot be used: the message names it and how to fix it.
    Credentials in the message (a URL's user:password, signed-URL parameters) are
    scrubbed as the error is made, so no caller can print them."""

    def __init__(self, message: str = "", *args):
        super().__init__(scrub(str(message)), *args)


class StorageError(SourceError):
    """Object storage refused a request or cannot be reached (access denied, no such
    bucket, bad endpoint): names the bucket and what to check."""


def protocol(uri: str) -> str:
    """'s3://b/k' -> 's3'; a plain path -> 'file'."""
    return uri.split("://", 1)[0].lower() if "://" in uri else "file"


def protocol_prefix(uri: str) -> str:
    """'s3://b/k' -> 's3://'; a plain path -> '' (to put back on fsspec's bare paths)."""
    return uri.split("://", 1)[0] + "://" if "://" in uri else ""


def absolute(uri: str) -> str:
    """A local path made absolute (what a rerun from another directory finds again);
    both in their normal form (`normal_uri`)."""
    if "://" in uri and not uri.startswith("file://"):
        return normal_uri(uri)
    import os

    return os.path.abspath(os.path.expanduser(uri.removeprefix("file://")))


def normal_uri(uri: str) -> str:
    """One spelling per file, before ids and keys are made: './', '//', 'a/../' and a
    trailing '/' go ('clips//a.mp4', './clips/a.mp4' -> 'clips/a.mp4'), locally and in
    object stores alike ('..' never climbs above a bucket). Object stores would read
    'a//b.mp4' as another key than 'a/b.mp4'; emodist reads them as one file, the one a
    manifest line means. http(s) URLs keep their query as it is."""
    if not uri:
        return uri
    if "://" not in uri:
        path = posixpath.normpath(uri)
        return "/" + path.lstrip("/") if path.startswith("//") else path  # POSIX keeps a leading '//'
    scheme, rest = uri.split("://", 1)
    query = ""
    if scheme.lower() in ("http", "https") and "?" in rest:
        rest, query = rest.split("?", 1)
        query = "?" + query
    if scheme.lower() == "file":
        return "file://" + normal_uri(rest) + query
    netloc, _, key = rest.partition("/")
    key = posixpath.normpath("/" + key).lstrip("/") if key else ""
    return f"{scheme}://{netloc}" + (f"/{key}" if key else "") + query


def userinfo(uri: str) -> str:
    """The 'user:password@' (or 'user@') of a URI with a scheme, '' when it has none:
    's3://KEY:SECRET@bucket/a.mp4' -> 'KEY:SECRET@'. Local paths have none ('@' is a
    character of file names)."""
    if "://" not in uri:
        return ""
    netloc = uri.split("://", 1)[1].split("/", 1)[0]
    return netloc.rsplit("@", 1)[0] + "@" if "@" in netloc else ""


def without_userinfo(text: str, uri: str) -> str:
    """`text` (a uri, or an id made from it) with `uri`'s user-info taken out."""
    info = userinfo(uri)
    return text.replace(info, "") if info else text


# Said wherever a uri with user-info is refused: emodist reads no credentials from uris
# (they would travel in rows, logs and Ray's task arguments); the SDK's usual places hold them.
CREDENTIALS_IN_URI = ("the uri carries credentials (user:password@); emodist does not take credentials from uris, "
                      "since they would reach rows and logs: remove them and give them as AWS_ACCESS_KEY_ID / "
                      "AWS_SECRET_ACCESS_KEY, AWS_PROFILE or storage.profile (for http(s), serve the clips "
                      "without a password or copy them to a bucket)")


def refuse_userinfo(uri: str, what: str) -> None:
    """SourceError for an --input, --output or input.root that carries user-info: refused
    at start, in one line that shows the uri without it."""
    if userinfo(uri):
        raise SourceError(f"{what} {without_userinfo(uri, uri)}: {CREDENTIALS_IN_URI}")


def is_local(uri: str) -> bool:
    return protocol(uri) in ("file", "local")


def bucket(uri: str) -> str:
    """'s3://bucket/key' -> 'bucket'; '' for local paths."""
    if is_local(uri):
        return ""
    return uri.split("://", 1)[1].split("/", 1)[0]


def _storage_cfg(cfg: Any):
    return getattr(cfg, "storage", cfg)


def storage_options(cfg: Any, uri: str) -> dict:
    """fsspec options for `uri` from a Config (or its StorageConfig); no secrets in them."""
    s = _storage_cfg(cfg)
    proto = protocol(uri)
    if proto in ("s3", "s3a"):
        config_kwargs: dict[str, Any] = {
            "connect_timeout": CONNECT_TIMEOUT_S,
            "read_timeout": READ_TIMEOUT_S,
            # standard mode: backoff with jitter on throttling, 5xx and timeouts.
            "retries": {"max_attempts": s.retries + 1, "mode": "standard"},
        }
        opts: dict[str, Any] = {
            "anon": bool(s.anon),
            "config_kwargs": config_kwargs,
            # Listings are streamed; a listing cache would keep all of them in memory.
            "use_listings_cache": False,
        }
        if s.endpoint_url:
            opts["endpoint_url"] = s.endpoint_url
        if s.region:
            opts["client_kwargs"] = {"region_name": s.region}
        if s.profile:
            opts["profile"] = s.profile
        return opts
    if proto in ("gs", "gcs"):
        opts = {}
        if s.anon:
            opts["token"] = "anon"
        if s.endpoint_url:
            opts["endpoint_url"] = s.endpoint_url
        return opts
    return {}


def filesystem(uri: str, cfg: Any):
    """(fsspec filesystem, path without protocol) for `uri`, with the config's options."""
    import fsspec

    return fsspec.core.url_to_fs(uri, **storage_options(cfg, uri))


def pyarrow_filesystem(fs):
    """A pyarrow filesystem over an fsspec one (for Ray Data's readers). Pickles as the
    fsspec constructor arguments, so no credentials travel with it."""
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    return PyFileSystem(FSSpecHandler(fs))


# --- errors ---------------------------------------------------------------------------

_CHECK = (
    "check the credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or "
    "storage.profile; storage.anon for public buckets), the bucket's policy, and "
    "storage.endpoint_url / storage.region"
)


def explain(exc: BaseException, uri: str, action: str) -> StorageError:
    """A StorageError for an exception raised while doing `action` ('reading', 'listing',
    'writing to') on `uri`, naming the bucket and what to check; secrets scrubbed."""
    where = f"bucket '{bucket(uri)}'" if bucket(uri) else "path"
    detail = scrub(str(exc) or type(exc).__name__).replace("\n", " ")
    local = _explain_local(exc, uri, action) if is_local(uri) else None
    if local is not None:
        # A local path: the problem is the path itself, never credentials or an endpoint.
        msg = local
    elif isinstance(exc, PermissionError):
        msg = f"access denied {action} {where} ({uri}): {detail}; {_CHECK}"
    elif isinstance(exc, FileNotFoundError) and bucket(uri) and _no_such_bucket(exc):
        msg = f"{where} does not exist ({uri}); create it or fix the path (and storage.endpoint_url)"
    elif isinstance(exc, FileNotFoundError):
        msg = f"not found: {uri}; check the path"
    else:
        msg = (
            f"cannot reach storage {action} {where} ({uri}): {type(exc).__name__}: {detail}; "
            "check storage.endpoint_url, storage.region and the network (storage.retries "
            "bounds the retries)"
        )
    return StorageError(scrub(msg))


def _explain_local(exc: BaseException, uri: str, action: str) -> str | None:
    """One line for a local path's OSError ('<path>: <problem>; <fix>'), or None (not found,
    and anything that is not an OSError, keep the general wording)."""
    import errno

    path = uri.removeprefix("file://")
    writing = action.startswith("writ")
    if isinstance(exc, PermissionError):
        fix = "choose a writable --output, or make it writable" if writing else "make it readable by this user"
        return f"{path}: permission denied; {fix}"
    if isinstance(exc, (FileExistsError, NotADirectoryError)):
        # The path, or a folder above it, is a file: name the one that is.
        blocker = path
        while blocker and not os.path.lexists(blocker) and os.path.dirname(blocker) != blocker:
            blocker = os.path.dirname(blocker)
        if os.path.lexists(blocker) and not os.path.isdir(blocker):
            problem = "is a file, not a folder" if blocker == path else f"{blocker} is a file, not a folder"
            fix = "choose a folder for --output" if writing else "check the path"
            return f"{path}: {problem}; {fix}"
    if isinstance(exc, OSError) and exc.errno == errno.ELOOP:
        return f"{path}: a symbolic link that loops (it leads back to itself through links); point it at a real folder or file"
    if isinstance(exc, OSError) and exc.errno == errno.EROFS:
        return f"{path}: read-only file system; choose a writable --output"
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return f"{path}: no space left on the device; free space or choose another --output"
    if isinstance(exc, OSError) and exc.errno not in (None, errno.ENOENT):
        return f"{path}: {exc.strerror or type(exc).__name__} {action} it; check the path"
    return None


def _no_such_bucket(exc: BaseException) -> bool:
    text = f"{exc} {exc.__cause__ or ''}".lower()
    return "nosuchbucket" in text or "bucket does not exist" in text or "specified bucket" in text


def check_writable(uri: str, cfg: Any) -> None:
    """Fail fast, before any work, when the output location cannot be written: writes and
    deletes one tiny object whose name readers skip (leading underscore)."""
    import uuid

    fs, path = filesystem(uri, cfg)
    probe = f"{path.rstrip('/')}/_emodist_write_check_{uuid.uuid4().hex[:8]}"
    _refuse_missing_bucket(fs, uri)
    try:
        fs.makedirs(path, exist_ok=True)
        fs.pipe_file(probe, b"")
        fs.rm_file(probe)
    except Exception as exc:  # noqa: BLE001 - mapped to a clear message
        raise explain(exc, uri, "writing to") from None


def _refuse_missing_bucket(fs, uri: str) -> None:
    """An output bucket that does not exist is refused, not created: s3fs's makedirs would
    create it (in the endpoint's default region, with its default policy)."""
    b = bucket(uri)
    if not b or not hasattr(fs, "call_s3"):
        return
    try:
        fs.call_s3("head_bucket", Bucket=b)
    except FileNotFoundError:
        raise StorageError(f"{uri}: bucket '{b}' does not exist; create it first (e.g. aws s3 mb s3://{b}), "
                           "or fix the bucket name (and storage.endpoint_url)") from None
    except Exception:  # noqa: BLE001 - access and network errors: the write probe says which
        return


# --- secrets --------------------------------------------------------------------------

_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s:@'\"]+:[^/\s@'\"]+@")
# The same user:password@ without its scheme (a uri's netloc quoted in a message).
_BARE_USERINFO = re.compile(r"(?<![\w/])[^/\s:@'\"]+:[^/\s:@'\"]+@(?=[\w.-])")
_QUERY_SECRETS = re.compile(
    r"(?i)\b(X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token|Signature|AWSAccessKeyId|"
    r"sig|sv|se|sp|access_token|token|api_key|apikey|password|secret)=[^&\s'\"]+"
)
_KV_SECRETS = re.compile(
    r"(?i)(['\"]?\b(?:aws_secret_access_key|aws_session_token|aws_access_key_id|secret_key|"
    r"secret|password|session_token|token|access_key|key_id|credentials?)['\"]?\s*[:=]\s*)"
    r"(['\"]?)[^'\"\s,}&]+\2"
)


def secret_values() -> list[str]:
    """The secret values in this process's environment (long enough to be distinctive)."""
    return [v for k in SECRET_ENV if len(v := os.environ.get(k, "")) >= 8]


# Every pattern above needs '@' or '=', or ':' with one of these words: a text with none
# of them (most paths and uris) skips the four regular expressions.
_KV_WORDS = re.compile(r"(?i)secret|password|token|key|credential")


def scrub(text: str, secrets: list[str] | None = None) -> str:
    """`text` with credentials removed: URL user:password@, signed-URL query parameters,
    key=value / 'key': 'value' pairs that name a secret, and the literal values of the
    secret variables in the environment (`secrets`: those values, when the caller read
    them once for many texts)."""
    if not text:
        return text
    if "@" in text or "=" in text or (":" in text and _KV_WORDS.search(text)):
        text = _USERINFO.sub(r"\g<scheme>***@", text)
        text = _BARE_USERINFO.sub("***@", text)
        text = _QUERY_SECRETS.sub(lambda m: f"{m.group(1)}=***", text)
        text = _KV_SECRETS.sub(lambda m: f"{m.group(1)}{m.group(2)}***{m.group(2)}", text)
    for value in secret_values() if secrets is None else secrets:
        text = text.replace(value, "***")
    return text


def scrub_all(texts: Iterable[str]) -> Iterator[str]:
    """scrub() of each text, the environment's secret values read once (a read task
    scrubs every uri it lists: per text, reading them was a third of a resume's time)."""
    secrets = secret_values()
    return (scrub(t, secrets) for t in texts)
