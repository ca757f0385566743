#!/usr/bin/env bash
# Make the services the tests need available: the mosquitto binary (tests start their own brokers)
# and a running PostgreSQL on 127.0.0.1:5432 that the test admin URL can connect to.
# Installs Debian's mosquitto, postgresql and chromium (browser tests) when missing (root only; otherwise says
# what to install). Playwright drives that chromium; it never downloads a browser of its own.
set -euo pipefail
cd "$(dirname "$0")/.."

# The Debian cluster the tests use (tests/conftest.py expects main on 5432 unless CAMFLEET_TEST_PG_ADMIN is set).
PG_CLUSTER=${CAMFLEET_PG_CLUSTER:-main}
PG_PORT=${CAMFLEET_PG_PORT:-5432}
PG_ADMIN=${CAMFLEET_TEST_PG_ADMIN:-postgresql://postgres@127.0.0.1:$PG_PORT/postgres}
# Used when the default role has no loopback trust auth (a fresh Debian install uses passwords there).
PG_FALLBACK_ROLE=camfleet_test
PG_FALLBACK_ADMIN="postgresql://$PG_FALLBACK_ROLE:$PG_FALLBACK_ROLE@127.0.0.1:$PG_PORT/postgres"

say() { printf '[services] %s\n' "$*"; }
die() { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }

have_mosquitto() { command -v mosquitto >/dev/null 2>&1 || [[ -x /usr/sbin/mosquitto ]]; }
have_postgres() { command -v pg_ctlcluster >/dev/null 2>&1 && command -v psql >/dev/null 2>&1 && [[ -d /etc/postgresql ]]; }
pg_ok() { PGCONNECT_TIMEOUT=5 psql "$1" -tAc 'select 1' >/dev/null 2>&1; }

MISSING=()
have_mosquitto || MISSING+=(mosquitto)
have_postgres || MISSING+=(postgresql postgresql-client)
[[ -x /usr/bin/chromium ]] || MISSING+=(chromium)
# GStreamer's RTSP server (system Python + gi) serves the RTSP capture test's stream on loopback.
/usr/bin/python3 -c "import gi; gi.require_version('GstRtspServer', '1.0')" >/dev/null 2>&1 ||
    MISSING+=(python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good gstreamer1.0-plugins-base)
if ((${#MISSING[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        die "missing Debian packages: ${MISSING[*]} (as root: apt-get install ${MISSING[*]})"
    fi
    say "installing ${MISSING[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${MISSING[@]}" >/dev/null
fi
have_mosquitto || die "mosquitto is still missing after the install"
have_postgres || die "PostgreSQL is still missing after the install"
[[ -x /usr/bin/chromium ]] || die "chromium is still missing after the install"

# Custom admin URL: the caller manages that server; just check it.
if [[ -n "${CAMFLEET_TEST_PG_ADMIN:-}" ]]; then
    pg_ok "$PG_ADMIN" || die "cannot connect to CAMFLEET_TEST_PG_ADMIN=$PG_ADMIN"
    say "PostgreSQL reachable at $PG_ADMIN"
    exit 0
fi

VERSION=$(ls /etc/postgresql | sort -V | tail -n1)
cluster_line() { pg_lsclusters -h 2>/dev/null | awk -v v="$VERSION" -v c="$PG_CLUSTER" '$1 == v && $2 == c'; }
if [[ -z "$(cluster_line)" ]]; then
    [[ $(id -u) -eq 0 ]] || die "no PostgreSQL $VERSION cluster $PG_CLUSTER (as root: pg_createcluster $VERSION $PG_CLUSTER)"
    say "creating PostgreSQL $VERSION cluster $PG_CLUSTER on port $PG_PORT"
    pg_createcluster --port "$PG_PORT" "$VERSION" "$PG_CLUSTER" >/dev/null
fi
read -r _ _ PORT STATUS _ <<<"$(cluster_line)"
[[ "$PORT" == "$PG_PORT" ]] || die "PostgreSQL $VERSION/$PG_CLUSTER uses port $PORT, not $PG_PORT (set CAMFLEET_TEST_PG_ADMIN)"
if [[ "$STATUS" != online* ]]; then
    say "starting PostgreSQL $VERSION/$PG_CLUSTER"
    pg_ctlcluster --skip-systemctl-redirect "$VERSION" "$PG_CLUSTER" start
fi
for _ in $(seq 1 60); do
    pg_isready -q -h 127.0.0.1 -p "$PG_PORT" && break
    sleep 0.5
done
pg_isready -q -h 127.0.0.1 -p "$PG_PORT" || die "PostgreSQL does not accept connections on 127.0.0.1:$PG_PORT"

if pg_ok "$PG_ADMIN"; then
    say "PostgreSQL ready at $PG_ADMIN"
elif pg_ok "$PG_FALLBACK_ADMIN"; then
    say "PostgreSQL ready at $PG_FALLBACK_ADMIN"
else
    # Debian's default: peer auth on the socket for postgres, passwords on loopback. Make a test role with a
    # password rather than weakening authentication; tests/conftest.py tries it after the default URL.
    [[ $(id -u) -eq 0 ]] || die "cannot connect as $PG_ADMIN; as root re-run this script, or set CAMFLEET_TEST_PG_ADMIN"
    say "creating role $PG_FALLBACK_ROLE (CREATEDB, password auth on loopback)"
    runuser -u postgres -- psql -q -v ON_ERROR_STOP=1 -p "$PG_PORT" -d postgres <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_FALLBACK_ROLE') THEN
    CREATE ROLE $PG_FALLBACK_ROLE LOGIN CREATEDB PASSWORD '$PG_FALLBACK_ROLE';
  ELSE
    ALTER ROLE $PG_FALLBACK_ROLE LOGIN CREATEDB PASSWORD '$PG_FALLBACK_ROLE';
  END IF;
END \$\$;
SQL
    pg_ok "$PG_FALLBACK_ADMIN" || die "cannot connect as $PG_FALLBACK_ADMIN either; check pg_hba.conf"
    say "PostgreSQL ready at $PG_FALLBACK_ADMIN"
fi
