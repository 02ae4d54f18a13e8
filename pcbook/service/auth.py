"""Users with bcrypt-hashed passwords, and the JWT manager (HS256, 15-minute tokens)."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass

import bcrypt
import jwt

from pcbook.service.stores import UserStore

SECRET_ENV = "PCBOOK_JWT_SECRET"
# Used when PCBOOK_JWT_SECRET is unset; the server says so at start. Long enough (>= 32 bytes) for
# HS256, and the same in every process so that a token from server1 is valid on server2 behind nginx.
DEV_SECRET = "pcbook-development-secret-change-me-in-production"
# Set (to anything) by whoever already told the learner about DEV_SECRET: the lesson's Stack sets it for
# every server after the first, so the notice shows once per lesson, not at every server start.
DEV_SECRET_NOTED_ENV = "PCBOOK_DEV_SECRET_NOTED"
TOKEN_DURATION = dt.timedelta(minutes=15)
ALGORITHM = "HS256"
# Go's bcrypt.DefaultCost; a higher cost would slow every Login and the server start.
BCRYPT_ROUNDS = 10
# bcrypt reads at most 72 bytes of a password; the bcrypt package refuses longer ones with ValueError.
BCRYPT_MAX_BYTES = 72
# RFC 7518, section 3.2: an HS256 key must be at least as long as the hash, 256 bits.
MIN_SECRET_BYTES = 32
# Set to 1, it lets a shorter PCBOOK_JWT_SECRET through (the server warns at start): the Go course signs
# with `secret`, and a Python server next to a Go one behind nginx must sign with the same. Never the default.
INSECURE_ENV = "PCBOOK_JWT_INSECURE_SECRET"


class WeakSecretError(ValueError):
    """PCBOOK_JWT_SECRET is too short to sign HS256 tokens safely."""


@dataclass(frozen=True)
class User:
    username: str
    hashed_password: bytes
    role: str

    @classmethod
    def create(cls, username: str, password: str, role: str) -> User:
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=BCRYPT_ROUNDS))
        return cls(username, hashed, role)

    def is_correct_password(self, password: str) -> bool:
        raw = password.encode()
        if len(raw) > BCRYPT_MAX_BYTES:
            # No stored password is that long (create() would have refused it): wrong, as Go answers.
            bcrypt.checkpw(raw[:BCRYPT_MAX_BYTES], self.hashed_password)  # the same time as a real check
            return False
        return bcrypt.checkpw(raw, self.hashed_password)


# Checked against when the user does not exist, so that a wrong username costs as much time as a
# wrong password and the answer time does not reveal which usernames exist. Its hash (of "not a
# password", cost BCRYPT_ROUNDS) is written out, as are the seed users' below: hashing at import and at
# start cost every server 0.17 s of CPU and every client 0.06 s (measured), and the suite starts hundreds.
_DUMMY = User("", b"$2b$10$1WJMEDy5AntQY87mhnXDXuIlvhokTMOhDxZqrX1YzgbQDfu8XGdvm", "")


def check_login(store: UserStore, username: str, password: str) -> User | None:
    """The user if the username and password are right, else None."""
    user = store.find(username)
    if user is None:
        _DUMMY.is_correct_password(password)
        return None
    return user if user.is_correct_password(password) else None


# username, password, role, and the password's bcrypt hash (cost BCRYPT_ROUNDS, made once; a unit test checks
# each hash against its password).
SEED_USERS = (
    ("admin1", "secret", "admin", b"$2b$10$F1sVcVdeS9ZXmiX76I5bNeJVJyf6.QK48V4.8dVGgFNU1Fp5qGmMC"),
    ("user1", "secret", "user", b"$2b$10$oIIlBle1zKZAGhtxbNbrIOv/DdNjVI/zCUbnfHqPHBBTzFc7lKrK6"),
)


def seed_users(store: UserStore) -> None:
    """The two users of the tutorial: admin1/secret (admin) and user1/secret (user)."""
    for username, _password, role, hashed in SEED_USERS:
        store.save(User(username, hashed, role))


def secret_from_env() -> tuple[str, bool]:
    """The signing secret and whether it is the development default.

    Raises WeakSecretError if PCBOOK_JWT_SECRET is set but shorter than MIN_SECRET_BYTES, unless
    PCBOOK_JWT_INSECURE_SECRET=1 accepts it (is_weak() then tells the server to warn).
    """
    secret = os.environ.get(SECRET_ENV)
    if not secret:
        return DEV_SECRET, True
    try:
        secret.encode()
    except UnicodeEncodeError:  # the environment's bytes are not UTF-8 (Python kept them as surrogates)
        raise WeakSecretError(
            f"{SECRET_ENV} is not valid UTF-8; use letters and digits (for example: {SECRET_ENV}=$(openssl rand"
            " -hex 32)), or unset it to use the development secret") from None
    if is_weak(secret) and os.environ.get(INSECURE_ENV) != "1":
        raise WeakSecretError(
            f"{SECRET_ENV} is {len(secret.encode())} bytes long; HS256 needs a secret of at least"
            f" {MIN_SECRET_BYTES} bytes (for example: {SECRET_ENV}=$(openssl rand -hex 32)), or unset it"
            f" to use the development secret ({INSECURE_ENV}=1 accepts it anyway, to share a course's secret)"
        )
    return secret, False


def is_weak(secret: str) -> bool:
    return len(secret.encode()) < MIN_SECRET_BYTES


@dataclass(frozen=True)
class UserClaims:
    username: str
    role: str
    exp: int


class JWTManager:
    """Signs and verifies access tokens; only HS256 with our secret is accepted."""

    InvalidTokenError = jwt.InvalidTokenError  # what verify raises (callers need not import jwt)

    def __init__(self, secret_key: str, token_duration: dt.timedelta = TOKEN_DURATION) -> None:
        self._secret = secret_key
        self.token_duration = token_duration

    def generate(self, user: User) -> str:
        exp = dt.datetime.now(dt.UTC) + self.token_duration
        # Same claims, in the same order, as the Go service's UserClaims.
        payload = {"exp": exp, "username": user.username, "role": user.role}
        return jwt.encode(payload, self._secret, algorithm=ALGORITHM)

    def verify(self, token: str) -> UserClaims:
        """Return the claims; raise jwt.InvalidTokenError for anything else than a valid token."""
        # algorithms is pinned: a token saying "alg": "none" or RS256 is refused, not trusted.
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                options={"require": ["exp", "username", "role"]},
            )
        except (OverflowError, ValueError, TypeError) as e:  # e.g. "exp": Infinity, which PyJWT cannot int()
            if isinstance(e, jwt.InvalidTokenError):
                raise
            raise jwt.InvalidTokenError("token has an invalid exp claim") from None
        # Like Go's NumericDate: exp is a JSON number; PyJWT would also take "exp": "9999999999".
        if isinstance(claims["exp"], bool) or not isinstance(claims["exp"], int | float):
            raise jwt.InvalidTokenError("exp claim is not a number")
        return UserClaims(username=str(claims["username"]), role=str(claims["role"]), exp=int(claims["exp"]))
