#!/usr/bin/env bash
# usage: loadtest/bench/callbacks.sh [p2p options], e.g. --users 1000 --devices 1 --rate 2000 --duration 10
# (after cargo build --release --bin tern --example callback_sink; run it under the quiet
# wrapper on a shared machine). Ack/delivery latency of 1:1 sends: an app without callbacks vs the same app with a
# before-send callback (a local sink answering allow at once). Release build.
set -u
B=${TERN_RELEASE:-$(cd "$(dirname "$0")/../.." && pwd)/target/release}
$B/examples/callback_sink 127.0.0.1:18080 0 > /tmp/hooks-sink.log 2>&1 &
SINK=$!
trap 'kill $SINK 2>/dev/null' EXIT
for mode in plain hooked; do
  rm -rf /tmp/hooks-lt-data
  cat > /tmp/hooks-lt.toml <<END
data_dir = "/tmp/hooks-lt-data"
log = "warn"
[http]
addr = "127.0.0.1:18000"
[gateway]
tcp_addr = "127.0.0.1:19000"
ws_addr = "127.0.0.1:19001"
inbound_frames_per_sec = 100000
[link]
addr = "127.0.0.1:19100"
[messages]
sends_per_sec = 100000
[[apps]]
id = 10000
secret = "load-test-secret-0123"
admins = ["admin"]
login_model = 4
END
  if [ $mode = hooked ]; then
    printf '[apps.callbacks]\nbefore_send_url = "http://127.0.0.1:18080/before"\n' >> /tmp/hooks-lt.toml
  fi
  $B/tern all --config /tmp/hooks-lt.toml > /tmp/hooks-tern-$mode.log 2>&1 &
  T=$!
  sleep 2
  echo "=== $mode"
  $B/tern loadtest p2p --secret load-test-secret-0123 --addr 127.0.0.1:19000 --http 127.0.0.1:18000 "$@" --quiet 2>&1 | tail -25
  kill $T; wait $T 2>/dev/null
done
rm -rf /tmp/hooks-lt-data
