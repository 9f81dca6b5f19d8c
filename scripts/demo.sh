#!/usr/bin/env bash
# Runs the ferrocam demo: a gateway with its embedded MQTT broker and one device called `demo`
# on /dev/video0 (or the test pattern when there is no camera). Ctrl-C stops both.
#
# Environment (all optional): FERROCAM_HTTP (127.0.0.1:8080), FERROCAM_MQTT_LISTEN
# (127.0.0.1:1883), FERROCAM_BIN_DIR (target/release), and any ferrocam-device variable such as
# FERROCAM_SOURCE or FERROCAM_ICE_UDP.
set -euo pipefail
cd "$(dirname "$0")/.."

bin_dir=${FERROCAM_BIN_DIR:-target/release}
http=${FERROCAM_HTTP:-127.0.0.1:8080}
mqtt=${FERROCAM_MQTT_LISTEN:-127.0.0.1:1883}

pids=()
stop() {
  trap - INT TERM EXIT
  # Device first, so it can mark itself offline while the broker is still up.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
}
trap stop INT TERM EXIT

"$bin_dir/ferrocam-gateway" --http "$http" --mqtt-listen "$mqtt" &
pids+=($!)

# Wait for the web server (and so the broker, which starts first).
for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/${http%:*}/${http##*:}") 2>/dev/null; then break; fi
  if ! kill -0 "${pids[0]}" 2>/dev/null; then
    echo "demo: the gateway did not start (is port ${http##*:} or ${mqtt##*:} in use?)" >&2
    exit 1
  fi
  sleep 0.1
done

"$bin_dir/ferrocam-device" --id demo --broker "mqtt://$mqtt" &
pids+=($!)

cat <<MSG

  ferrocam is running.  Open  http://$http/  and click "demo".
  Press Ctrl-C to stop.

MSG
wait -n "${pids[@]}" || true
