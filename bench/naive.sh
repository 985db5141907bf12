#!/usr/bin/env bash
# The naive alternative a user would script: at each window boundary, oathtool and mosquitto_pub
# once per thermostat. oathtool makes at most 8 digits (the bridge's Terneo default is 9).
# Usage: naive.sh HOST PORT BASE_TOPIC PERIOD_S PASSES DEVICES_FILE  (lines: "SN HEX_KEY")
# Prints bash's `times` at the end: CPU of the shell and of every command it ran.
set -eu
host=$1 port=$2 base=$3 period=$4 passes=$5 devices=$6
epoch=946684800 # 2000-01-01T00:00:00Z, where the Terneo counter starts
iso() { date -u -d "@$1" +%Y-%m-%dT%H:%M:%S.000Z; }
for ((pass = 0; pass < passes; pass++)); do
  now_ms=$(($(date +%s%N) / 1000000))
  from=$(((now_ms / 1000 - epoch) / period * period + period + epoch))
  wait_ms=$((from * 1000 - now_ms))
  sleep "$((wait_ms / 1000)).$(printf %03d $((wait_ms % 1000)))"
  valid_from=$(iso "$from")
  valid_until=$(iso "$((from + period))")
  while read -r sn key; do
    code=$(oathtool --totp -d 8 -s "${period}s" -S '2000-01-01 00:00:00 UTC' -N "@$from" "$key")
    mosquitto_pub -h "$host" -p "$port" -V 5 -r -t "$base/$sn/totp" \
      -m "{\"sn\":\"$sn\",\"auth\":\"$code\",\"time\":\"$((from - epoch))\",\"valid_from\":\"$valid_from\",\"valid_until\":\"$valid_until\",\"period\":$period,\"digits\":8}"
  done <"$devices"
done
times
