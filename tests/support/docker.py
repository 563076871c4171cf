"""A Docker engine for the container suite: the one DOCKER_HOST names, or a private dockerd.

:func:`docker_engine` yields a :class:`Docker` bound to one daemon. When ``DOCKER_HOST`` names a
daemon that answers, that one is used and left alone. Otherwise (the usual case in CI) it starts
a dockerd of its own, as root, with everything under one temporary folder: ``--data-root``,
``--exec-root``, its socket (``-H unix://...``) and ``--pidfile``, and ``--bridge=none`` so no
``docker0`` appears on the host (Compose makes its own networks; builds run ``--network none``).
At the end it stops that dockerd (SIGTERM: dockerd stops its containers and its containerd),
ends any containerd shim of that folder by pid, unmounts what is left under the folder, restores
the host's iptables ``filter`` and ``nat`` tables and ``net.ipv4.ip_forward`` as they were, and
removes the folder.

A missing ``docker`` client, ``dockerd``, Compose v2 plugin or ``debootstrap`` is a
:class:`DockerUnavailableError` with one message saying what to install: the suite fails on it,
it does not skip.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

INSTALL_HINT = (
    "run `.ci/run` as root (it installs them), or install Debian's docker.io and debootstrap "
    "and a Compose v2 plugin (deploy/README.md, 'Docker Compose', says how)"
)
#: How long a private dockerd may take to answer, and to stop.
START_DEADLINE_S = 60.0
STOP_DEADLINE_S = 30.0
_IPTABLES_TABLES = ("filter", "nat")
_IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


class DockerUnavailableError(RuntimeError):
    """Docker cannot be had here; the message says what to install or do."""


@dataclass(frozen=True)
class Docker:
    """The ``docker`` client bound to one daemon (``DOCKER_HOST``) and a private CLI config."""

    host: str
    config_dir: Path
    #: True when this harness started the daemon (and will stop it).
    private: bool

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The process environment for a docker, compose or base-image.sh command."""
        env = dict(os.environ)
        env["DOCKER_HOST"] = self.host
        # No credential helpers or contexts from the user's ~/.docker: nothing is pulled.
        env["DOCKER_CONFIG"] = str(self.config_dir)
        env.pop("DOCKER_CONTEXT", None)
        if extra:
            env.update(extra)
        return env

    def run(
        self,
        *args: str,
        timeout: float = 120.0,
        check: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """``docker ARGS``; with ``check``, a non-zero exit fails with the command's output."""
        return run_checked(["docker", *args], env=self.env(env), timeout=timeout, check=check)

    def output(self, *args: str, timeout: float = 120.0) -> str:
        """Standard output of ``docker ARGS`` (which must succeed), stripped."""
        return self.run(*args, timeout=timeout).stdout.strip()


def run_checked(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 120.0,
    check: bool = True,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv``; with ``check``, raise with its exit code and (the tail of) its output."""
    result = subprocess.run(
        list(argv),
        env=None if env is None else dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        output = (result.stdout + result.stderr)[-4000:]
        msg = f"{' '.join(argv)} exited {result.returncode}:\n{output}"
        raise AssertionError(msg)
    return result


def missing_tools(*, need_dockerd: bool) -> list[str]:
    """What the suite needs and this machine lacks (empty when all is there)."""
    missing = [tool for tool in ("docker", "debootstrap") if shutil.which(tool) is None]
    if need_dockerd and shutil.which("dockerd") is None:
        missing.append("dockerd (Debian: docker.io)")
    if "docker" not in missing:
        probe = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, text=True, check=False
        )
        if probe.returncode != 0:
            missing.append("docker compose (a Compose v2 plugin)")
    return missing


def _answers(host: str, config_dir: Path) -> bool:
    env = {**os.environ, "DOCKER_HOST": host, "DOCKER_CONFIG": str(config_dir)}
    try:
        probe = subprocess.run(
            ["docker", "version", "--format", "{{.Server.Version}}"],
            env=env,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    return probe.returncode == 0


@contextlib.contextmanager
def docker_engine() -> Iterator[Docker]:
    """The daemon ``DOCKER_HOST`` names if it answers, else a private dockerd (see module doc)."""
    external = os.environ.get("DOCKER_HOST", "")
    missing = missing_tools(need_dockerd=not external)
    if missing:
        msg = f"the container suite cannot run: missing {', '.join(missing)}; {INSTALL_HINT}"
        raise DockerUnavailableError(msg)
    with tempfile.TemporaryDirectory(prefix="qrng-dd-docker-cli.") as config:
        config_dir = Path(config)
        if external and _answers(external, config_dir):
            yield Docker(external, config_dir, private=False)
            return
        if os.geteuid() != 0:
            msg = (
                f"no Docker daemon answers at DOCKER_HOST={external or '(unset)'} and only root "
                f"may start a private one: run the suite as root, or point DOCKER_HOST at a daemon"
            )
            raise DockerUnavailableError(msg)
        with _private_dockerd() as host:
            docker = Docker(host, config_dir, private=True)
            try:
                yield docker
            finally:
                # Whatever a failed test left: its containers, and its networks' bridges on
                # the host. The daemon is ours alone, so everything goes.
                ids = docker.run("ps", "--all", "--quiet", check=False).stdout.split()
                if ids:
                    docker.run("rm", "--force", "--volumes", *ids, check=False)
                docker.run("network", "prune", "--force", check=False)


def _iptables_snapshot() -> dict[str, str]:
    snapshot: dict[str, str] = {}
    if shutil.which("iptables-save") is None:
        return snapshot
    for table in _IPTABLES_TABLES:
        result = subprocess.run(
            ["iptables-save", "-t", table], capture_output=True, text=True, check=False
        )
        text = result.stdout if result.returncode == 0 else ""
        if f"*{table}" not in text:
            # The table did not exist yet: its pristine state is built-in chains, accept.
            chains = {"filter": ("INPUT", "FORWARD", "OUTPUT")}.get(
                table, ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING")
            )
            text = f"*{table}\n" + "".join(f":{c} ACCEPT [0:0]\n" for c in chains) + "COMMIT\n"
        snapshot[table] = text
    return snapshot


def _iptables_restore(snapshot: Mapping[str, str]) -> None:
    # iptables-restore without --noflush flushes each table it is given and deletes its
    # user-defined chains (DOCKER, DOCKER-USER, DOCKER-ISOLATION-*) before loading the rules.
    for text in snapshot.values():
        subprocess.run(
            ["iptables-restore"], input=text, capture_output=True, text=True, check=False
        )


def _mounts_under(root: Path) -> list[str]:
    prefix = str(root) + "/"
    mounts = []
    with open("/proc/self/mountinfo", encoding="utf-8") as info:
        for line in info:
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(prefix):
                mounts.append(point)
    return sorted(mounts, key=len, reverse=True)


def _pids_mentioning(text: str) -> list[int]:
    """Processes whose command line names ``text`` (this harness's unique folder)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            pids.append(int(entry.name))
    return pids


def _wait_gone(pid: int, deadline: float) -> bool:
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists():
            return True
        time.sleep(0.1)  # polling interval, bounded by the deadline
    return not Path(f"/proc/{pid}").exists()


@contextlib.contextmanager
def _private_dockerd() -> Iterator[str]:
    root = Path(tempfile.mkdtemp(prefix="qrng-dd-dockerd."))
    socket = root / "docker.sock"
    host = f"unix://{socket}"
    iptables = _iptables_snapshot()
    ip_forward = _IP_FORWARD.read_text() if _IP_FORWARD.exists() else None
    log = (root / "dockerd.log").open("wb")
    command = [
        "dockerd",
        "--data-root",
        str(root / "data"),
        "--exec-root",
        str(root / "exec"),
        "-H",
        host,
        "--pidfile",
        str(root / "dockerd.pid"),
        "--bridge=none",
        "--log-level=warn",
    ]
    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + START_DEADLINE_S
        with tempfile.TemporaryDirectory(prefix="qrng-dd-docker-cli.") as config:
            while not _answers(host, Path(config)):
                if process.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    tail = (root / "dockerd.log").read_text(errors="replace")[-3000:]
                    msg = f"the private dockerd did not answer on {host}:\n{tail}"
                    raise DockerUnavailableError(msg)
                time.sleep(0.2)  # polling interval, bounded by the deadline
        yield host
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_DEADLINE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_DEADLINE_S)
        log.close()
        # containerd and its shims of this daemon name the folder on their command line.
        for pid in _pids_mentioning(str(root)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            if not _wait_gone(pid, time.monotonic() + 10):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for point in _mounts_under(root):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
        _iptables_restore(iptables)
        if ip_forward is not None:
            with contextlib.suppress(OSError):
                _IP_FORWARD.write_text(ip_forward)
        shutil.rmtree(root, ignore_errors=True)
