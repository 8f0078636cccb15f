"""The token checker on real token files: scopes, errors, the environment, rotation."""

from __future__ import annotations

import os
import stat

import pytest

from serving.auth import (
    TOKENS_ENV,
    AuthConfig,
    Authenticator,
    AuthError,
    client_token,
    create_token,
    ensure_local_token,
)


@pytest.fixture
def auth(tmp_path) -> AuthConfig:
    return AuthConfig(tokens_file=str(tmp_path / "auth" / "tokens.yaml"))


def test_scopes_and_refusals(auth):
    reader = create_token(auth, "reader", ["read"])
    writer = create_token(auth, "writer", ["write"])
    check = Authenticator(auth).check
    assert check(f"Bearer {reader}", "read") == "reader"
    assert check(f"bearer   {writer}  ", "read") == "writer"  # scheme case, spaces
    assert check(f"Bearer {writer}", "write") == "writer"
    with pytest.raises(AuthError) as lacking:
        check(f"Bearer {reader}", "write")
    assert lacking.value.status == 403 and "'reader'" in lacking.value.message
    for header in (None, "", "Bearer", f"Basic {reader}", f"Bearer {reader}x"):
        with pytest.raises(AuthError) as refused:
            check(header, "read")
        assert refused.value.status == 401


def test_the_token_file_is_owner_only_and_replacing_a_name_revokes_the_old_secret(auth):
    old = create_token(auth, "svc", ["read"])
    new = create_token(auth, "svc", ["read"])
    path = auth.tokens_file.replace("~", os.environ["HOME"])
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    check = Authenticator(auth).check
    assert check(f"Bearer {new}", "read") == "svc"
    with pytest.raises(AuthError):
        check(f"Bearer {old}", "read")


def test_a_rotated_file_is_reread_and_a_broken_one_keeps_the_last_tokens(auth, tmp_path):
    first = create_token(auth, "a", ["read"])
    checker = Authenticator(auth)
    second = create_token(auth, "b", ["read"])
    assert checker.check(f"Bearer {second}", "read") == "b"
    (tmp_path / "auth" / "tokens.yaml").write_text("tokens: [{name: a}]")  # mid-rotation junk
    assert checker.check(f"Bearer {first}", "read") == "a"


@pytest.mark.parametrize(("text", "names"), [
    ("tokens: [{name: x, scopes: [read], token: short}]", "tokens.0.token"),
    ("tokens: [{name: x, scopes: [admin], token: " + "t" * 40 + "}]", "tokens.0.scopes.0"),
    ("tokens: [: :", "not YAML"),
])
def test_a_malformed_file_fails_naming_the_entry_and_never_the_secret(auth, text, names):
    from pathlib import Path

    path = Path(auth.tokens_file)
    path.parent.mkdir(parents=True)
    path.write_text(text)
    with pytest.raises(ValueError, match=names) as failed:
        Authenticator(auth)
    assert "t" * 40 not in str(failed.value)


def test_missing_file_is_a_clear_error_and_auth_off_needs_none(auth):
    with pytest.raises(FileNotFoundError, match="irec token create"):
        Authenticator(auth)
    assert Authenticator(auth.model_copy(update={"enabled": False})).check(None, "write") is None


def test_tokens_inline_in_the_environment_replace_the_file(auth, monkeypatch):
    secret = "e" * 40
    monkeypatch.setenv(TOKENS_ENV, f"tokens: [{{name: env, scopes: [write], token: {secret}}}]")
    assert Authenticator(auth).check(f"Bearer {secret}", "write") == "env"
    assert ensure_local_token(auth) is None  # the environment is the token source


def test_local_clients_find_a_token(auth, monkeypatch):
    monkeypatch.delenv("IREC_API_TOKEN", raising=False)
    assert client_token(auth) is None
    created = ensure_local_token(auth)
    assert created is not None and ensure_local_token(auth) is None
    local = client_token(auth)
    assert Authenticator(auth).check(f"Bearer {local}", "write") == "local"
    monkeypatch.setenv("IREC_API_TOKEN", "given")
    assert client_token(auth) == "given"
