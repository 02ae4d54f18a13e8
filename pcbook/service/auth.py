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
        return bcrypt.checkpw(password.encode(), self.hashed_password)


# Checked against when the user does not exist, so that a wrong username costs as much time as a
# wrong password and the answer time does not reveal which usernames exist.
_DUMMY = User.create("", "not a password", "")


def check_login(store: UserStore, username: str, password: str) -> User | None:
    """The user if the username and password are right, else None."""
    user = store.find(username)
    if user is None:
        _DUMMY.is_correct_password(password)
        return None
    return user if user.is_correct_password(password) else None


SEED_USERS = (("admin1", "secret", "admin"), ("user1", "secret", "user"))


def seed_users(store: UserStore) -> None:
    """The two users of the tutorial: admin1/secret (admin) and user1/secret (user)."""
    for username, password, role in SEED_USERS:
        store.save(User.create(username, password, role))


def secret_from_env() -> tuple[str, bool]:
    """The signing secret and whether it is the development default."""
    secret = os.environ.get(SECRET_ENV)
    return (secret, False) if secret else (DEV_SECRET, True)


@dataclass(frozen=True)
class UserClaims:
    username: str
    role: str
    exp: int


class JWTManager:
    """Signs and verifies access tokens; only HS256 with our secret is accepted."""

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
        claims = jwt.decode(
            token,
            self._secret,
            algorithms=[ALGORITHM],
            options={"require": ["exp", "username", "role"]},
        )
        return UserClaims(username=str(claims["username"]), role=str(claims["role"]), exp=int(claims["exp"]))
