"""Real DICOM peers for tests and benchmarks: an Orthanc PACS, a DCMTK ``storescp``, and the DCMTK SCUs.

Every peer is a context manager that stops its process on exit, also when the body fails. Clients here
only ever connect to 127.0.0.1. Orthanc's HTTP server refuses remote clients (``RemoteAccessAllowed``
false), but neither Orthanc 1.10 nor DCMTK 3.6.7 ``storescp`` has an option to choose the address the
DICOM port listens on: both listen on every interface, on a free port picked at random.

DCMTK leaves Nagle's algorithm on unless ``TCP_NODELAY=1`` is in its environment, which makes C-STORE of
large objects about 25 times slower; every process started here gets it by default (``nodelay=True``).
A missing tool fails the test under ``CI=true`` and skips it elsewhere (:func:`tests.tools.require_tool`).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

from tests.tools import require_tool

__all__ = [
    "Orthanc",
    "PeerError",
    "StoreSCP",
    "dcmtk_tls",
    "echoscu",
    "free_port",
    "storescu",
    "wait_for",
]

T = TypeVar("T")

HOST = "127.0.0.1"
# storescp transfer syntax choice -> its option (uncompressed ones only, or every one DCMTK knows).
TransferSyntaxes = Literal["uncompressed", "little", "implicit", "all"]
_STORESCP_TS = {"uncompressed": "+x=", "little": "+xe", "implicit": "+xi", "all": "+xa"}
# Bind failures: a port that free_port() found free was taken before the peer bound it.
_PORT_TAKEN = ("already in use", "cannot initialise network", "cannot create network")
_START_ATTEMPTS = 3
# urllib without proxies: an http_proxy in the environment must not see requests to 127.0.0.1.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class PeerError(RuntimeError):
    """A peer did not start, stopped unexpectedly, or refused a request."""


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 now (the kernel's choice for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.05, what: str = "") -> T:
    """Poll ``predicate`` until it returns something truthy, and return that.

    Raises
    ------
    TimeoutError
        ``predicate`` stayed falsy for ``timeout`` seconds; ``what`` names the wait in the message.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"waited {timeout:g} s for {what or predicate!r}")
        time.sleep(interval)


def _env(nodelay: bool) -> dict[str, str]:
    env = dict(os.environ)
    if nodelay:
        env["TCP_NODELAY"] = "1"
    else:
        env.pop("TCP_NODELAY", None)
    return env


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def _listens(pid: int, port: int) -> bool:
    """Whether process ``pid`` itself listens on TCP ``port`` (Linux /proc), not some other process.

    Where /proc cannot tell, whether anything accepts connections on ``port``.
    """
    try:
        inodes = set()
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        return _accepts(port)
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # local_address is HEXIP:HEXPORT; state 0A is LISTEN; field 9 is the socket inode.
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port and fields[9] in inodes:
                return True
    return False


def _halt(process: subprocess.Popen[bytes] | None, timeout: float, graceful: bool = True) -> None:
    """SIGTERM (or SIGKILL when not ``graceful``) and wait; SIGKILL whatever is still there after ``timeout``."""
    if process is None or process.poll() is not None:
        return
    if graceful:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
            return
        except subprocess.TimeoutExpired:
            pass
    process.kill()
    process.wait(10)


class Orthanc:
    """Orthanc as a test PACS: own config, storage and log in one folder, free ports, no plugins.

    ``with Orthanc() as pacs:`` starts it and waits until its REST API answers (the DICOM port opens
    before the HTTP port); ``stop()`` then ``start()`` brings it back on the same ports and storage.
    Any calling AE may C-ECHO and C-STORE; the called AE is not checked.

    Parameters
    ----------
    directory
        Holds ``orthanc.json``, ``storage/`` (files and SQLite index) and ``orthanc.log``. ``None``: a
        new temporary folder, removed on exit.
    aet
        ``DicomAet``.
    nodelay
        Put ``TCP_NODELAY=1`` in Orthanc's environment (its DICOM layer is DCMTK's).
    config
        Extra configuration, applied last (e.g. ``{"DicomModalities": {"node": ["NODE", "127.0.0.1", 11112]}}``).
    startup_timeout
        Seconds to wait for the REST API.
    graceful_exit
        How ``__exit__`` stops Orthanc: SIGTERM and wait (about 3.5 s), or SIGKILL (instant; SQLite and the
        fsync'd storage survive it). ``None``: graceful only when ``directory`` was given, i.e. kept.
    """

    def __init__(
        self,
        directory: Path | None = None,
        *,
        aet: str = "ORTHANC",
        nodelay: bool = True,
        config: Mapping[str, Any] | None = None,
        startup_timeout: float = 30.0,
        graceful_exit: bool | None = None,
    ) -> None:
        self._tool = require_tool("Orthanc", "orthanc")
        self._own_dir = directory is None
        self.dir = Path(tempfile.mkdtemp(prefix="orthanc-")) if directory is None else Path(directory)
        self.aet = aet
        self.nodelay = nodelay
        self.extra_config = dict(config or {})
        self.startup_timeout = startup_timeout
        self.graceful_exit = not self._own_dir if graceful_exit is None else graceful_exit
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.config_path = self.dir / "orthanc.json"
        self.log_path = self.dir / "orthanc.log"
        self.startup_seconds = 0.0
        self._process: subprocess.Popen[bytes] | None = None

    # -- lifecycle -------------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        try:
            self._start_with_retries()
        except BaseException:
            self._cleanup()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._cleanup()

    def _cleanup(self) -> None:
        try:
            self.stop(graceful=self.graceful_exit)
        finally:
            if self._own_dir:
                shutil.rmtree(self.dir, ignore_errors=True)

    def _start_with_retries(self) -> None:
        for attempt in range(_START_ATTEMPTS):
            try:
                self.start()
                return
            except PeerError as error:
                # Another process took a port between free_port() and Orthanc's bind: new ports.
                if attempt + 1 == _START_ATTEMPTS or not any(m in str(error) for m in _PORT_TAKEN):
                    raise
                self.dicom_port, self.http_port = free_port(), free_port()

    def write_config(self) -> Path:
        """Write ``orthanc.json`` for the current ports and return its path."""
        storage = self.dir / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        config: dict[str, Any] = {
            "Name": f"test-{self.aet}",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "Plugins": [],
            "LuaScripts": [],
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "OrthancExplorerEnabled": False,
            "WebDavEnabled": False,
            "DicomServerEnabled": True,
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "DicomCheckModalityHost": False,
            "DicomModalities": {},
            "OrthancPeers": {},
            "StorageCompression": False,
            "SaveJobs": False,
            # SyncStorageArea (fsync of every stored file) keeps its default: true.
        }
        config.update(self.extra_config)
        self.config_path.write_text(json.dumps(config, indent=2))
        return self.config_path

    def start(self) -> None:
        """Start Orthanc (again) on this folder and these ports; wait until ``/system`` answers.

        Raises
        ------
        PeerError
            Orthanc exited or did not answer within ``startup_timeout``; the message ends with its log.
        """
        if self.running:
            return
        self.write_config()
        began = time.monotonic()
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [self._tool, str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_env(self.nodelay),
                cwd=self.dir,
            )
        deadline = began + self.startup_timeout
        while True:
            code = self._process.poll()
            if code is not None:
                self._process = None
                raise PeerError(f"Orthanc exited with status {code} while starting:\n{_tail(self.log_path)}")
            try:
                # Answers from this process only: another program may hold a port free_port() returned.
                if _listens(self._process.pid, self.dicom_port) and _listens(self._process.pid, self.http_port):
                    self.get("/system", timeout=1.0)
                    break
                raise PeerError("not listening yet")
            except (OSError, http.client.HTTPException, PeerError):
                if time.monotonic() > deadline:
                    self.stop(graceful=False)
                    raise PeerError(
                        f"Orthanc did not answer on port {self.http_port} within {self.startup_timeout:g} s:\n"
                        + _tail(self.log_path)
                    ) from None
                time.sleep(0.02)
        self.startup_seconds = time.monotonic() - began

    def stop(self, *, graceful: bool = True, timeout: float = 20.0) -> None:
        """Stop Orthanc: SIGTERM and wait (about 3.5 s), or SIGKILL at once when not ``graceful``."""
        process, self._process = self._process, None
        _halt(process, timeout, graceful)

    @property
    def running(self) -> bool:
        """True while the Orthanc process this object started is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """Process id of the running Orthanc (for /proc figures such as peak RSS), ``None`` when stopped."""
        return self._process.pid if self.running and self._process is not None else None

    # -- REST ----------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL of the REST API."""
        return f"http://{HOST}:{self.http_port}"

    def request(self, method: str, path: str, body: bytes | None = None, timeout: float = 30.0) -> bytes:
        """Raw REST call; raises :class:`PeerError` on an HTTP error status."""
        req = urllib.request.Request(self.url + path, data=body, method=method)
        try:
            with _HTTP.open(req, timeout=timeout) as response:
                data: bytes = response.read()
                return data
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")
            raise PeerError(f"Orthanc {method} {path}: HTTP {error.code} {detail}") from None

    def get(self, path: str, timeout: float = 30.0) -> Any:
        """GET ``path`` and decode its JSON."""
        return json.loads(self.request("GET", path, timeout=timeout))

    def post(self, path: str, payload: Any) -> Any:
        """POST ``payload`` as JSON to ``path`` and decode the JSON answer."""
        return json.loads(self.request("POST", path, json.dumps(payload).encode()))

    def instances(self) -> list[str]:
        """Orthanc ids of every stored instance."""
        ids: list[str] = self.get("/instances")
        return ids

    def sop_instance_uids(self) -> set[str]:
        """SOP Instance UIDs of every stored instance."""
        return {item["MainDicomTags"]["SOPInstanceUID"] for item in self.get("/instances?expand")}

    def find_instances(self, study_uid: str) -> list[dict[str, Any]]:
        """Expanded instance records (``ID``, ``MainDicomTags``, ...) of one StudyInstanceUID."""
        query = {"Level": "Instance", "Query": {"StudyInstanceUID": study_uid}, "Expand": True}
        found: list[dict[str, Any]] = self.post("/tools/find", query)
        return found

    def metadata(self, orthanc_id: str) -> dict[str, str]:
        """Orthanc's metadata of an instance: ``SopClassUid``, ``TransferSyntax``, ``RemoteAET``, ..."""
        meta: dict[str, str] = self.get(f"/instances/{orthanc_id}/metadata?expand")
        return meta

    def study_sop_classes(self, study_uid: str) -> list[str]:
        """SOP Class UID of each stored instance of ``study_uid``, sorted (one entry per instance)."""
        return sorted(self.metadata(item["ID"])["SopClassUid"] for item in self.find_instances(study_uid))

    def download(self, orthanc_id: str) -> bytes:
        """The stored DICOM file (Part 10 bytes) of an instance."""
        return self.request("GET", f"/instances/{orthanc_id}/file")

    def upload(self, data: bytes) -> str:
        """Store a DICOM file through REST (no DICOM network); returns its Orthanc id."""
        answer = json.loads(self.request("POST", "/instances", data))
        return str(answer["ID"])

    def clear(self) -> None:
        """Delete every stored patient (and so every instance)."""
        for patient in self.get("/patients"):
            self.request("DELETE", f"/patients/{patient}")

    def wait_for(self, predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.05) -> T:
        """:func:`wait_for`, failing early with the log if Orthanc has died."""

        def check() -> T:
            if not self.running:
                raise PeerError(f"Orthanc is not running:\n{_tail(self.log_path)}")
            return predicate()

        return wait_for(check, timeout, interval, what=f"{predicate!r} on Orthanc")


def scanner_and_pacs(pacs: Orthanc) -> str:
    """The ``[[peers]]`` of an end-to-end node: the test scanner (``STORESCU``, may store) and ``pacs``."""
    return (
        '[[peers]]\nname = "scanner"\nae_title = "STORESCU"\nallow_store = true\n'
        f'[[peers]]\nname = "pacs"\nae_title = "{pacs.aet}"\nhost = "127.0.0.1"\nport = {pacs.dicom_port}\n'
    )


class StoreSCP:
    """DCMTK ``storescp`` on a free port, writing what it receives into ``out_dir``.

    Parameters
    ----------
    out_dir
        Where received files go (created); ``None``: a new temporary folder, removed on exit.
    aet
        Its AE title (``-aet``); it does not check the called AE title.
    transfer_syntaxes
        ``"uncompressed"`` (DCMTK's default: the three uncompressed ones, explicit VR local byte order
        preferred), ``"little"`` (the same, explicit VR little endian preferred), ``"implicit"`` (implicit
        VR little endian only) or ``"all"`` (``+xa``: every one DCMTK knows, compressed included).
    promiscuous
        Also accept storage SOP classes DCMTK does not know (``-pm``).
    nodelay
        Put ``TCP_NODELAY=1`` in its environment.
    max_pdu
        Largest PDU it receives (``-pdu``, 4096..131072); ``None``: DCMTK's 16384.
    extra
        More ``storescp`` options, e.g. ``("--sleep-during", "2")`` or ``("--refuse",)``.
    """

    def __init__(
        self,
        out_dir: Path | None = None,
        *,
        aet: str = "STORESCP",
        transfer_syntaxes: TransferSyntaxes = "uncompressed",
        promiscuous: bool = True,
        nodelay: bool = True,
        max_pdu: int | None = None,
        extra: Sequence[str] = (),
        startup_timeout: float = 10.0,
    ) -> None:
        self._tool = require_tool("storescp", "dcmtk")
        self._own_dir = Path(tempfile.mkdtemp(prefix="storescp-"))
        self.out_dir = self._own_dir / "received" if out_dir is None else Path(out_dir)
        self._keep_out = out_dir is not None
        self.log_path = self._own_dir / "storescp.log"
        self.aet = aet
        self.transfer_syntaxes = transfer_syntaxes
        self.promiscuous = promiscuous
        self.nodelay = nodelay
        self.max_pdu = max_pdu
        self.extra = tuple(extra)
        self.startup_timeout = startup_timeout
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        """The ``storescp`` command line for the current port."""
        args = [self._tool, "-aet", self.aet, _STORESCP_TS[self.transfer_syntaxes], "-od", str(self.out_dir)]
        if self.promiscuous:
            args.append("-pm")
        if self.max_pdu is not None:
            args += ["-pdu", str(self.max_pdu)]
        return [*args, *self.extra, str(self.port)]

    def __enter__(self) -> Self:
        try:
            for attempt in range(_START_ATTEMPTS):
                try:
                    self.start()
                    break
                except PeerError as error:
                    if attempt + 1 == _START_ATTEMPTS or not any(m in str(error) for m in _PORT_TAKEN):
                        raise
                    self.port = free_port()
        except BaseException:
            self._cleanup()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._cleanup()

    def _cleanup(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self._own_dir, ignore_errors=True)

    def start(self) -> None:
        """Start ``storescp`` and wait until its port accepts connections.

        Raises
        ------
        PeerError
            It exited or did not listen within ``startup_timeout``; the message ends with its output.
        """
        if self.running:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=_env(self.nodelay)
            )
        deadline = time.monotonic() + self.startup_timeout
        while not _listens(self._process.pid, self.port):
            code = self._process.poll()
            if code is not None:
                self._process = None
                raise PeerError(f"storescp exited with status {code} while starting:\n{_tail(self.log_path)}")
            if time.monotonic() > deadline:
                self.stop()
                raise PeerError(f"storescp did not listen on port {self.port}:\n{_tail(self.log_path)}")
            time.sleep(0.02)

    def stop(self, *, graceful: bool = True, timeout: float = 10.0) -> None:
        """Stop ``storescp`` (SIGTERM, then SIGKILL after ``timeout``; at once when not ``graceful``)."""
        process, self._process = self._process, None
        _halt(process, timeout, graceful)

    @property
    def running(self) -> bool:
        """True while the ``storescp`` process this object started is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """Process id of the running ``storescp`` (for /proc figures such as peak RSS), ``None`` when stopped."""
        return self._process.pid if self.running and self._process is not None else None

    def log(self) -> str:
        """Everything ``storescp`` printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def files(self) -> list[Path]:
        """Received files, sorted by name (DCMTK names them ``<modality>.<SOP Instance UID>``).

        A file is complete once its C-STORE response went out: ``storescp`` writes before answering.
        """
        if not self.out_dir.is_dir():
            return []
        return sorted(p for p in self.out_dir.iterdir() if p.is_file())


def _run(args: list[str], nodelay: bool, timeout: float, check: bool) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        args, capture_output=True, text=True, env=_env(nodelay), timeout=timeout, check=False, stdin=subprocess.DEVNULL
    )
    if check and done.returncode != 0:
        shown = " ".join(args[:12]) + (" ..." if len(args) > 12 else "")
        raise PeerError(f"{shown} exited with status {done.returncode}:\n{done.stdout}{done.stderr}")
    return done


def storescu(
    files_or_dir: Path | str | Iterable[Path | str],
    port: int,
    *,
    aet: str = "STORESCU",
    aec: str = "ANY-SCP",
    required: bool = False,
    nodelay: bool = True,
    extra: Sequence[str] = (),
    timeout: float = 120.0,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Send files (folders are scanned recursively: ``+sd +r``) with DCMTK ``storescu`` to 127.0.0.1:``port``.

    ``required`` passes ``-R`` (propose only the presentation contexts the files need): without it,
    ``storescu`` proposes its default list, which lacks e.g. Segmentation Storage. ``-v`` is always on,
    so the output lists each C-STORE.

    Raises
    ------
    PeerError
        ``check`` and a non-zero exit status (the message holds its output).
    """
    paths = [files_or_dir] if isinstance(files_or_dir, Path | str) else list(files_or_dir)
    if not paths:
        raise ValueError("storescu: nothing to send")
    args = [require_tool("storescu", "dcmtk"), "-v", "-aet", aet, "-aec", aec]
    if any(Path(p).is_dir() for p in paths):
        args += ["+sd", "+r"]
    if required:
        args.append("-R")
    args += [*extra, HOST, str(port), *(str(p) for p in paths)]
    return _run(args, nodelay, timeout, check)


def echoscu(
    port: int,
    aec: str = "ANY-SCP",
    aet: str = "ECHOSCU",
    *,
    nodelay: bool = True,
    extra: Sequence[str] = (),
    timeout: float = 30.0,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """C-ECHO to 127.0.0.1:``port`` with DCMTK ``echoscu`` (``extra``: more options, e.g. :func:`dcmtk_tls`);
    raises :class:`PeerError` on failure if ``check``."""
    args = [require_tool("echoscu", "dcmtk"), "-v", "-aet", aet, "-aec", aec, "-to", "10", *extra, HOST, str(port)]
    return _run(args, nodelay, timeout, check)


def dcmtk_tls(
    key: Path | None = None,
    certificate: Path | None = None,
    trust: Iterable[Path] = (),
    *,
    peer_certificate: Literal["require", "verify", "ignore"] = "require",
) -> list[str]:
    """DCMTK's TLS options (``storescu``, ``echoscu``, ``storescp``; DCMTK built with OpenSSL), for ``extra``.

    ``key`` + ``certificate`` (PEM, unencrypted): ``+tls KEY CERT``; without them ``+tla`` (TLS without a
    certificate of our own: a client only). ``trust``: a ``+cf CA`` per CA file the peer's certificate may
    chain to. ``peer_certificate``: ``-rc`` (verify it, fail if absent: DCMTK's default), ``-vc`` (verify it
    if present; ``storescp`` only) or ``-ic`` (do not verify it). The security profile is DCMTK's default,
    Non-downgrading BCP 195 (``+py``: TLS 1.2 or newer).
    """
    if (key is None) != (certificate is None):
        raise ValueError("give key and certificate, or neither")
    args = ["+tls", str(key), str(certificate)] if key is not None else ["+tla"]
    for ca in trust:
        args += ["+cf", str(ca)]
    return [*args, {"require": "-rc", "verify": "-vc", "ignore": "-ic"}[peer_certificate]]
