"""AuthService.Login: check the username and password, answer with a fresh access token."""

from __future__ import annotations

import grpc

from pcbook.pb import auth_service_pb2 as pb
from pcbook.pb import auth_service_pb2_grpc as pb_grpc
from pcbook.service.auth import JWTManager, check_login
from pcbook.service.stores import UserStore


class AuthServicer(pb_grpc.AuthServiceServicer):
    def __init__(self, user_store: UserStore, jwt_manager: JWTManager) -> None:
        self.user_store = user_store
        self.jwt_manager = jwt_manager

    def Login(self, request: pb.LoginRequest, context: grpc.ServicerContext) -> pb.LoginResponse:
        user = check_login(self.user_store, request.username, request.password)
        if user is None:
            # One answer for a wrong username and a wrong password: do not reveal which users exist.
            context.abort(grpc.StatusCode.NOT_FOUND, "incorrect username/password")
        return pb.LoginResponse(access_token=self.jwt_manager.generate(user))
