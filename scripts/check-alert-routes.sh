#!/usr/bin/env bash
# Checks that Alertmanager routes every alert in deploy/prometheus/alerts.yml
# by its severity: page -> receiver "page", warning -> receiver "team".
set -euo pipefail
cd "$(dirname "$0")/.."
rules=deploy/prometheus/alerts.yml
config=deploy/alertmanager/alertmanager.yml
pairs=$(awk '/- alert:/ {name=$3} /severity:/ && name != "" {print name, $2; name=""}' "$rules")
n=0
while read -r name severity; do
  case "$severity" in
    page) want=page ;;
    warning) want=team ;;
    *) echo "$name: unknown severity $severity" >&2; exit 1 ;;
  esac
  if ! amtool config routes test --config.file="$config" --verify.receivers="$want" \
      alertname="$name" severity="$severity" >/dev/null 2>&1; then
    echo "$name (severity $severity) is not routed to $want" >&2
    exit 1
  fi
  n=$((n + 1))
done <<<"$pairs"
[ "$n" -ge 10 ] || { echo "found only $n alerts in $rules" >&2; exit 1; }
echo "$n alerts routed by severity (page -> page, warning -> team)"
