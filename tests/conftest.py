"""Suite-wide fixtures. Markers are declared in pyproject.toml."""

pytest_plugins = ["tests.flows.kafka_fixtures"]
