"""What the tutorial's lessons (1-6, and lesson 9's refusals) share: its servers, the texts its checks look
for, and the two refusal steps that prove nginx requires a client certificate.

The texts are the evidence each Expect matches: a regex for the machine, the same claim in words for
the learner (the runner and the docs print the words).
"""

from __future__ import annotations

from pcbook.stage.model import NGINX_PORT, Client, Expect, Nginx, Server, Step, Text

AUTH_LOGIN = "/techschool_pcbook.AuthService/Login"
CREATE_LAPTOP = "/techschool_pcbook.LaptopService/CreateLaptop"


# nginx with `ssl_verify_client on` completes the handshake and answers every request 400 when the
# client showed no certificate or one it cannot verify; the gRPC client reports that HTTP status.
REFUSED_400 = Text(r"cannot create auth interceptor: rpc error: code = \w+ desc = .*status: 400",
                   "that nginx answered 400 (`Received http2 header with status: 400`)")


def refusals(servers: tuple[Server, ...], conf: str | Nginx,
             address: str = f"0.0.0.0:{NGINX_PORT}") -> tuple[Step, ...]:
    """The checkpoint steps that prove nginx itself requires a client certificate signed by the CA."""
    return tuple(
        Step(
            key=key,
            title=title,
            why=f"`ssl_verify_client on` with `ssl_client_certificate cert/ca-cert.pem`: nginx answers 400 to {who}, "
                "and no backend ever sees the call.",
            servers=servers,
            nginx=conf if isinstance(conf, Nginx) else Nginx(conf),
            client=Client(tls=True, address=address, cert=cert),
            expect=Expect(ok=False, client_says=REFUSED_400, no_calls=True),
            checkpoint=True,
        )
        for key, title, cert, who in (
            ("no-client-cert", "a TLS client without a certificate is refused by nginx", "none",
             "a client that shows no certificate"),
            ("foreign-client-cert", "a TLS client with another CA's certificate is refused by nginx", "foreign",
             "a certificate that the CA did not sign"),
        )
    )


def plain(name: str, port: int) -> Server:
    return Server(name, port)


def mtls(name: str, port: int) -> Server:
    return Server(name, port, tls=True, client_auth="require")


def server_tls(name: str, port: int) -> Server:
    return Server(name, port, tls=True, client_auth="none")


PLAIN_PAIR = (plain("server1", 50051), plain("server2", 50052))
MTLS_PAIR = (mtls("server1", 50051), mtls("server2", 50052))
SERVER_TLS_PAIR = (server_tls("server1", 50051), server_tls("server2", 50052))
BOTH = ("server1", "server2")
UNAVAILABLE = Text(r"cannot create auth interceptor: rpc error: code = Unavailable desc = ",
                   "that Login failed with `code = Unavailable`")
HTTP1_400 = Text(UNAVAILABLE.regex + r".*\(HTTP status 400\)",
                 "that Login failed with `code = Unavailable` and `(HTTP status 400)`")
CREATED = Text(r"created laptop with id: ", "`created laptop with id: ...`")
BAD_GATEWAY = Text(r"code = Unavailable desc = .*502", "`code = Unavailable` with nginx's HTML 502 page")
# A backend that requires a client certificate refuses nginx: the Go server of the tutorial alerts
# "bad certificate" in the handshake (TLS 1.2); grpcio's server (TLS 1.3) closes after the handshake.
# Which of nginx's lines appears depends on when the close reaches it: while reading the response
# header, or still writing the request (Broken pipe).
UPSTREAM_DROPPED = r"upstream prematurely closed connection|Connection reset by peer|Broken pipe"
DROPPED = Text(UPSTREAM_DROPPED, "that the backend closed the connection")
# nginx 1.22 with OpenSSL 3.0 (Debian 12) notices it still in the handshake.
NO_CLIENT_CERT_NGINX = (
    r"bad certificate|certificate required|peer closed connection in SSL handshake|" + UPSTREAM_DROPPED
)
NO_CLIENT_CERT_SERVER = r"PEER_DID_NOT_RETURN_A_CERTIFICATE"
NO_CERT_NGINX = Text(NO_CLIENT_CERT_NGINX, "that the backend refused the TLS connection (no client certificate)")
NO_CERT_SERVER = Text(NO_CLIENT_CERT_SERVER, "`PEER_DID_NOT_RETURN_A_CERTIFICATE`")
# With TLS 1.2 the refusal comes inside the handshake: Go servers alert `bad certificate` (the lecture's
# `SSL_do_handshake() failed`), grpcio servers close the connection.
TLS12_REFUSED_NGINX = r"while SSL handshaking to upstream"
TLS12_REFUSED = Text(TLS12_REFUSED_NGINX, "`... while SSL handshaking to upstream`")
