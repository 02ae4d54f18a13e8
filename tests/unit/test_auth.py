from __future__ import annotations

import base64
import datetime as dt
import json
import time

import jwt
import pytest

from pcbook.service import auth
from pcbook.service.stores import UserStore

SECRET = "a-secret-long-enough-for-hs256-and-for-the-hs512-test-below-0123456789"


@pytest.fixture(scope="module")
def users() -> UserStore:
    store = UserStore()
    auth.seed_users(store)
    return store


def test_seeded_users_have_hashed_passwords(users: UserStore) -> None:
    admin, user = users.find("admin1"), users.find("user1")
    assert admin.role == "admin" and user.role == "user"
    assert b"secret" not in admin.hashed_password and admin.hashed_password.startswith(b"$2")
    assert admin.is_correct_password("secret") and not admin.is_correct_password("Secret")


def test_written_out_hashes_are_of_their_passwords_at_the_cost_of_a_new_one() -> None:
    cost = f"$2b${auth.BCRYPT_ROUNDS:02d}$".encode()
    for username, password, _role, hashed in auth.SEED_USERS:
        assert hashed.startswith(cost) and auth.User(username, hashed, "").is_correct_password(password)
    # The dummy costs a real check: a wrong username takes as long as a wrong password.
    assert auth._DUMMY.hashed_password.startswith(cost) and auth._DUMMY.is_correct_password("not a password")
    assert auth.User.create("x", "y", "user").hashed_password.startswith(cost)


def test_check_login(users: UserStore) -> None:
    assert auth.check_login(users, "admin1", "secret").username == "admin1"
    assert auth.check_login(users, "admin1", "wrong") is None
    assert auth.check_login(users, "nobody", "secret") is None


def test_secret_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(auth.SECRET_ENV, raising=False)
    assert auth.secret_from_env() == (auth.DEV_SECRET, True)
    mine = "m" * auth.MIN_SECRET_BYTES
    monkeypatch.setenv(auth.SECRET_ENV, mine)
    assert auth.secret_from_env() == (mine, False)


def test_token_round_trip_and_claims() -> None:
    manager = auth.JWTManager(SECRET)
    token = manager.generate(auth.User("admin1", b"", "admin"))
    claims = manager.verify(token)
    assert (claims.username, claims.role) == ("admin1", "admin")
    assert abs(claims.exp - (time.time() + 15 * 60)) < 5
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "HS256"
    assert list(jwt.decode(token, options={"verify_signature": False})) == ["exp", "username", "role"]


def test_expired_token_refused() -> None:
    manager = auth.JWTManager(SECRET, token_duration=dt.timedelta(seconds=-1))
    token = manager.generate(auth.User("admin1", b"", "admin"))
    with pytest.raises(jwt.ExpiredSignatureError):
        auth.JWTManager(SECRET).verify(token)


def test_token_signed_with_another_key_refused() -> None:
    token = auth.JWTManager("another-secret-that-is-also-long-enough").generate(auth.User("a", b"", "admin"))
    with pytest.raises(jwt.InvalidSignatureError):
        auth.JWTManager(SECRET).verify(token)


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_alg_none_token_refused() -> None:
    payload = {"exp": int(time.time()) + 600, "username": "admin1", "role": "admin"}
    token = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(payload)}."
    with pytest.raises(jwt.InvalidTokenError):
        auth.JWTManager(SECRET).verify(token)


def test_other_hmac_algorithm_refused() -> None:
    payload = {"exp": int(time.time()) + 600, "username": "admin1", "role": "admin"}
    token = jwt.encode(payload, SECRET, algorithm="HS512")
    with pytest.raises(jwt.InvalidAlgorithmError):
        auth.JWTManager(SECRET).verify(token)


def test_token_without_role_refused() -> None:
    token = jwt.encode({"exp": int(time.time()) + 600, "username": "x"}, SECRET, algorithm="HS256")
    with pytest.raises(jwt.MissingRequiredClaimError):
        auth.JWTManager(SECRET).verify(token)


def test_garbage_token_refused() -> None:
    with pytest.raises(jwt.InvalidTokenError):
        auth.JWTManager(SECRET).verify("not a token")
