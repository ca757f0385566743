#!/bin/sh
# Build the password file from the environment, then run mosquitto with camfleet's config.
#   MQTT_HUB_PASSWORD       password of user "hub"
#   MQTT_OBSERVER_PASSWORD  password of user "observer" (optional)
#   MQTT_SITE_PASSWORDS     "site1:password1,site2:password2" (agents log in with their site name)
set -eu
PASSWD=/mosquitto/config/passwd
: "${MQTT_HUB_PASSWORD:?set MQTT_HUB_PASSWORD}"
rm -f "$PASSWD"
touch "$PASSWD"
chmod 0700 "$PASSWD"
mosquitto_passwd -b "$PASSWD" hub "$MQTT_HUB_PASSWORD"
if [ -n "${MQTT_OBSERVER_PASSWORD:-}" ]; then
    mosquitto_passwd -b "$PASSWD" observer "$MQTT_OBSERVER_PASSWORD"
fi
OLD_IFS=$IFS
IFS=,
for entry in ${MQTT_SITE_PASSWORDS:-}; do
    mosquitto_passwd -b "$PASSWD" "${entry%%:*}" "${entry#*:}"
done
IFS=$OLD_IFS
chown mosquitto:mosquitto "$PASSWD" 2>/dev/null || true
exec mosquitto -c /mosquitto/config/mosquitto.conf
