"""Bearer-token authentication of the recommendation API (Ray Serve and the Bento alike).

Tokens live in one YAML file (on Kubernetes: a Secret mounted into every Ray pod), or inline
in ``$IREC_API_TOKENS`` (same YAML), never in the platform config::

    tokens:
      - name: web-frontend      # who holds it: logged, never the secret
        scopes: [read]          # read: /recommend; write: the events API (write implies read)
        token: "<random, at least 32 characters>"

Clients send ``Authorization: Bearer <token>`` (gRPC: the ``authorization`` metadata key).
A token is compared in constant time against every known token (sha256 digests, so the
lengths leak nothing either). The file is re-read when it changes, so a rotated Secret takes
effect without a restart. ``irec token create`` writes a token into the file.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, Field, ValidationError

from data.config import StrictModel

TOKENS_ENV = "IREC_API_TOKENS"
# What a client sends, when set (irec recommend, the benchmarks).
CLIENT_TOKEN_ENV = "IREC_API_TOKEN"
Scope = Literal["read", "write"]
MIN_TOKEN_CHARS = 32


class AuthConfig(StrictModel):
    """Who may call the API."""

    # off: every request is served without a token (a closed network only).
    enabled: bool = True
    # The token file (see above); ``$IREC_API_TOKENS`` replaces it when set. On Kubernetes the
    # chart mounts the Secret ``auth.existingSecret`` here.
    tokens_file: str = "~/.config/irec/tokens.yaml"


class Token(StrictModel):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    scopes: list[Scope] = Field(min_length=1)
    token: str = Field(min_length=MIN_TOKEN_CHARS)


class TokenFile(BaseModel):
    tokens: list[Token] = []


class AuthError(Exception):
    """401 (no or unknown token) or 403 (token lacks the scope); ``field`` names the header."""

    def __init__(self, status: Literal[401, 403], message: str) -> None:
        super().__init__(message)
        self.status, self.field, self.message = status, "authorization", message


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def read_tokens(cfg: AuthConfig) -> TokenFile:
    """The configured tokens: ``$IREC_API_TOKENS`` when set, else the file."""
    inline = os.environ.get(TOKENS_ENV)
    if inline is not None:
        return _parse(f"${TOKENS_ENV}", inline)
    return read_token_file(Path(cfg.tokens_file).expanduser())


def read_token_file(path: Path) -> TokenFile:
    if not path.exists():
        raise FileNotFoundError(f"auth.tokens_file {path} does not exist: create a token "
                                "with `irec token create NAME` (or set auth.enabled: false)")
    return _parse(str(path), path.read_text())


def _parse(source: str, text: str) -> TokenFile:
    """A malformed file is an error naming the source and the entry (never the secrets)."""
    try:
        return TokenFile.model_validate(yaml.safe_load(text) or {})
    except yaml.YAMLError as exc:
        raise ValueError(f"{source}: not YAML: {exc}") from None
    except ValidationError as exc:
        where = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"{source}: not a valid token file: {where}") from None


class Authenticator:
    """Checks ``Authorization`` headers against the token file, re-reading it when it changes."""

    def __init__(self, cfg: AuthConfig) -> None:
        self.cfg = cfg
        self._lock = threading.Lock()
        self._stamp: tuple | None = None
        self._known: list[tuple[bytes, Token]] = []
        if cfg.enabled:
            self._refresh()

    def _source_stamp(self) -> tuple:
        inline = os.environ.get(TOKENS_ENV)
        if inline is not None:
            return ("env", inline)
        path = Path(self.cfg.tokens_file).expanduser()
        try:
            stat = path.stat()
        except FileNotFoundError:
            return ("missing",)
        return ("file", stat.st_mtime_ns, stat.st_size, stat.st_ino)

    def _refresh(self) -> None:
        stamp = self._source_stamp()
        if stamp == self._stamp:
            return
        with self._lock:
            tokens = read_tokens(self.cfg).tokens
            self._known = [(_digest(t.token), t) for t in tokens]
            self._stamp = stamp

    def check(self, authorization: str | None, scope: Scope) -> str | None:
        """The caller's token name, or raise ``AuthError``; None when auth is off."""
        if not self.cfg.enabled:
            return None
        try:
            self._refresh()
        except (OSError, ValueError):
            pass  # a file mid-rotation or briefly unreadable: keep the tokens read last
        kind, _, value = (authorization or "").strip().partition(" ")
        if kind.lower() != "bearer" or not value.strip():
            raise AuthError(401, "missing bearer token: send 'Authorization: Bearer <token>'")
        offered = _digest(value.strip())
        found = None
        for digest, token in self._known:  # every entry, match or not: constant time
            if hmac.compare_digest(digest, offered):
                found = token
        if found is None:
            raise AuthError(401, "unknown or revoked token")
        if scope not in found.scopes and not (scope == "read" and "write" in found.scopes):
            raise AuthError(403, f"token {found.name!r} lacks the {scope!r} scope "
                                 f"(has {found.scopes})")
        return found.name


def create_token(cfg: AuthConfig, name: str, scopes: list[Scope]) -> str:
    """Add (or replace) token ``name`` in the token file, owner-only; returns the secret."""
    path = Path(cfg.tokens_file).expanduser()
    current = read_token_file(path).tokens if path.exists() else []
    secret = secrets.token_urlsafe(32)
    entry = Token(name=name, scopes=scopes, token=secret)
    tokens = [t for t in current if t.name != name] + [entry]
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        yaml.safe_dump(TokenFile(tokens=tokens).model_dump(), out, sort_keys=False)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temp, path)
    return secret


def client_token(cfg: AuthConfig, scope: Scope = "read") -> str | None:
    """The token a local client sends: ``$IREC_API_TOKEN``, else the token file's first token
    with ``scope``; None when there is neither."""
    if os.environ.get(CLIENT_TOKEN_ENV):
        return os.environ[CLIENT_TOKEN_ENV]
    path = Path(cfg.tokens_file).expanduser()
    if not path.exists():
        return None
    for token in read_token_file(path).tokens:
        if scope in token.scopes or (scope == "read" and "write" in token.scopes):
            return token.token
    return None


def ensure_local_token(cfg: AuthConfig) -> Path | None:
    """Create token ``local`` (read, write) when auth is on and there is no token source.

    Returns the token file it created, or None when there was nothing to do.
    """
    path = Path(cfg.tokens_file).expanduser()
    if not cfg.enabled or os.environ.get(TOKENS_ENV) is not None or path.exists():
        return None
    create_token(cfg, "local", ["read", "write"])
    return path


class TokenGuard:
    """ASGI middleware: the bearer token and its scope, before anything reads the body.

    ``scopes`` maps a route to the scope it needs; any other route needs ``write`` (deny by
    default), except ``open_paths`` (health, the API description). ``authenticator`` gives
    the process's ``Authenticator`` (built when the server starts, after this middleware).
    """

    def __init__(self, app, authenticator: Callable[[], Authenticator],
                 scopes: dict[str, Scope], open_paths: frozenset[str]) -> None:
        self.app, self.authenticator = app, authenticator
        self.scopes, self.open_paths = scopes, open_paths

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        root = scope.get("root_path", "")
        path = scope["path"][len(root):] if scope["path"].startswith(root) else scope["path"]
        path = "/" + path.lstrip("/")
        if path not in self.open_paths:
            header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
            try:
                self.authenticator().check(header, self.scopes.get(path, "write"))
            except AuthError as exc:
                await refuse(send, exc.status, exc.field, exc.message,
                             [(b"www-authenticate", b"Bearer")] if exc.status == 401 else [])
                return
        await self.app(scope, receive, send)


async def refuse(send, status: int, field: str, message: str,
                 headers: list[tuple[bytes, bytes]] = ()) -> None:
    """Answer ``{"error": "<field>: <message>", "field": <field>}`` with ``status``."""
    body = json.dumps({"error": f"{field}: {message}", "field": field}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        *headers]})
    await send({"type": "http.response.body", "body": body})
