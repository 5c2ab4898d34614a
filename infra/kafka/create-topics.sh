#!/bin/sh
# Create the topics listed in topics.txt (one "<name> <partitions> [key=value ...]"
# a line, # comments). Safe to re-run: existing topics are left alone.
#   BOOTSTRAP=kafka:9092 sh create-topics.sh /etc/edgetune/topics.txt
set -eu
topics_file="${1:-/etc/edgetune/topics.txt}"
bootstrap="${BOOTSTRAP:-kafka:9092}"
kafka_bin="${KAFKA_BIN:-/opt/kafka/bin}"

grep -v '^[[:space:]]*#' "$topics_file" | while read -r name partitions configs; do
  [ -n "$name" ] || continue
  set --
  for c in $configs; do set -- "$@" --config "$c"; done
  "$kafka_bin/kafka-topics.sh" --bootstrap-server "$bootstrap" --create --if-not-exists \
    --topic "$name" --partitions "$partitions" --replication-factor 1 "$@"
done
echo "topics ready on $bootstrap"
