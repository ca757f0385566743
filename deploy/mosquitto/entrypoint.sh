#!/bin/sh
# Run mosquitto with camfleet's config and the files `camfleet-hub mqtt export-mosquitto --out DIR` writes.
#   CAMFLEET_MQTT_EXPORT_DIR  folder shared with the hub holding password_file and acl_file (default /camfleet/mqtt);
#                             after each export, reload with SIGHUP (docker compose kill -s HUP mosquitto)
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
exec mosquitto -c "$CONF"
