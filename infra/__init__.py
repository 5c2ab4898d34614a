"""Deployment and observability as code: Prometheus, Grafana, Kafka topics, compose."""
