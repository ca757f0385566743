#!/bin/sh
# Run mosquitto with camfleet's config and the files `camfleet-hub mqtt export-mosquitto --out DIR` writes.
#   CAMFLEET_MQTT_EXPORT_DIR  folder shared with the hub holding password_file and acl_file (default /camfleet/mqtt);
#                             a new export there is picked up within CAMFLEET_MQTT_RELOAD_CHECK_S seconds (default 5:
#                             SIGHUP to mosquitto; `docker compose kill -s HUP mosquitto` does the same at once)
#   MQTT_HUB_PASSWORD         before the first export only: password of user "hub", with the bootstrap acl
#                             (/mosquitto/config/acl: the hub's block alone) so the hub can start
# Agents and observers log in with the credentials the hub issued them (agent/{site}/{agent}); each has its own
# block in the exported acl_file (docs/SECURITY.md "MQTT access").
set -eu
EXPORT=${CAMFLEET_MQTT_EXPORT_DIR:-/camfleet/mqtt}
CONF=/tmp/camfleet-mosquitto.conf
if [ -f "$EXPORT/password_file" ] && [ -f "$EXPORT/acl_file" ]; then
    PASSWD=$EXPORT/password_file
    ACL=$EXPORT/acl_file
else
    : "${MQTT_HUB_PASSWORD:?set MQTT_HUB_PASSWORD (or export the hub's files into $EXPORT)}"
    echo "camfleet: no export in $EXPORT yet: only the hub user can log in" >&2
    PASSWD=/tmp/camfleet-passwd
    ACL=/mosquitto/config/acl
    rm -f "$PASSWD"
    touch "$PASSWD"
    chmod 0600 "$PASSWD"
    mosquitto_passwd -b "$PASSWD" hub "$MQTT_HUB_PASSWORD"
    chown mosquitto:mosquitto "$PASSWD" 2>/dev/null || true
fi
sed -e "s#^password_file .*#password_file $PASSWD#" -e "s#^acl_file .*#acl_file $ACL#" \
    /mosquitto/config/mosquitto.conf > "$CONF"
if [ "$PASSWD" != "$EXPORT/password_file" ]; then
    exec mosquitto -c "$CONF"
fi
# The export is replaced by rename (new inode): reload when either file changes, stop when mosquitto stops.
stamp() { stat -c '%i %Y %s' "$EXPORT/password_file" "$EXPORT/acl_file" 2>/dev/null || true; }
mosquitto -c "$CONF" &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null || true' TERM INT
seen=$(stamp)
while kill -0 "$pid" 2>/dev/null; do
    sleep "${CAMFLEET_MQTT_RELOAD_CHECK_S:-5}" &
    wait $! || true
    now=$(stamp)
    if [ -n "$now" ] && [ "$now" != "$seen" ]; then
        seen=$now
        echo "camfleet: new export in $EXPORT: reloading mosquitto" >&2
        kill -HUP "$pid" 2>/dev/null || true
    fi
done
wait "$pid"
