#!/bin/sh
# Start SeaweedFS (master + volume + filer + S3 gateway in one process) with one S3 identity from the environment.
#   S3_ACCESS_KEY / S3_SECRET_KEY   the credentials the hub uses (required: no default)
# The identity goes into a config file rather than AWS_* variables: their handling changed between releases.
set -eu
: "${S3_ACCESS_KEY:?set S3_ACCESS_KEY}"
: "${S3_SECRET_KEY:?set S3_SECRET_KEY}"
CONFIG=/tmp/s3.json
umask 077
cat >"$CONFIG" <<JSON
{"identities": [{"name": "camfleet",
  "credentials": [{"accessKey": "$S3_ACCESS_KEY", "secretKey": "$S3_SECRET_KEY"}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
JSON
exec weed server -dir=/data -s3 -s3.port=8333 -s3.config="$CONFIG" -volume.max=0 -master.volumeSizeLimitMB=1024
