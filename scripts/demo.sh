#!/usr/bin/env bash
# Runs the ferrocam demo: a gateway with its embedded MQTT broker and one device called `demo`
# on /dev/video0 (or the test pattern when there is no camera). Ctrl-C stops both.
#
# Environment (all optional): FERROCAM_HTTP (127.0.0.1:8080), FERROCAM_MQTT_LISTEN
# (127.0.0.1:1883), FERROCAM_BIN_DIR (target/release), FERROCAM_DEMO_DIR (target/demo: the
# demo's auth file, grant keys and credentials), and any ferrocam-device variable such as
# FERROCAM_SOURCE or FERROCAM_ICE_UDP.
set -euo pipefail
cd "$(dirname "$0")/.."

bin_dir=${FERROCAM_BIN_DIR:-target/release}
http=${FERROCAM_HTTP:-127.0.0.1:8080}
mqtt=${FERROCAM_MQTT_LISTEN:-127.0.0.1:1883}
demo_dir=${FERROCAM_DEMO_DIR:-target/demo}

# A login and an API token for the demo, made once and kept (mode 0600) so they stay valid
# across runs.
creds="$demo_dir/credentials.json"
if [[ ! -s "$creds" || ! -s "$demo_dir/auth.toml" ]]; then
  mkdir -p "$demo_dir"
  (umask 077 && "$bin_dir/ferrocam-gateway" init --dir "$demo_dir" --user demo --force --json >"$creds")
fi
field() { sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p" "$creds"; }

# The camera `demo`, enrolled the way every device is: its broker password and signing key go
# into its own config file (made once, kept).
if [[ ! -s "$demo_dir/demo.env" || "$demo_dir/grant.pub" -nt "$demo_dir/demo.env" ]] || ! grep -q '^id = "demo"' "$demo_dir/devices.toml" 2>/dev/null; then
  (umask 077 && "$bin_dir/ferrocam-gateway" device add demo --force \
    --devices "$demo_dir/devices.toml" --broker "mqtt://$mqtt" --out "$demo_dir/demo.env" >/dev/null)
fi

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

"$bin_dir/ferrocam-gateway" --http "$http" --mqtt-listen "$mqtt" --auth-config "$demo_dir/auth.toml" &
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

# The device reads its config file as systemd would (EnvironmentFile=); other FERROCAM_*
# variables set in this shell (FERROCAM_SOURCE, …) still apply.
# The broker address is this run's (FERROCAM_MQTT_LISTEN may differ from when it was enrolled).
(set -a && . "$demo_dir/demo.env" && set +a && FERROCAM_BROKER="mqtt://demo@$mqtt" exec "$bin_dir/ferrocam-device") &
pids+=($!)

cat <<MSG

  ferrocam is running.  Open  http://$http/  and click "demo".

    login:      $(field user) / $(field password)
    API token:  $(field token)

  e.g.  curl -H "Authorization: Bearer $(field token)" http://$http/api/devices
        WHEP endpoint: http://$http/whep/demo (Bearer token as above)
  Another camera:  $bin_dir/ferrocam-gateway device add cam2 --devices $demo_dir/devices.toml \\
                     --broker mqtt://$mqtt --out cam2.env
                   then start ferrocam-device with the variables in cam2.env on that board.
  Press Ctrl-C to stop.

MSG
wait -n "${pids[@]}" || true
