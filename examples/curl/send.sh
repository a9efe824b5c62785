#!/usr/bin/env bash
# send.sh sends an email through Herald's HTTP/JSON API with curl, waits until its deliveries
# are final, and prints each delivery's channel and state. It needs curl and jq
# (https://jqlang.org; apt-get install curl jq, or brew install jq).
#
# It reads the stack's address and key from the environment, as `make run` writes them to
# .herald/dev.env; export them to the script with set -a:
#
#   set -a; . .herald/dev.env; set +a
#   examples/curl/send.sh you@example.com "Hello" "It works"
#
# HERALD_API_KEY   the app key (required)
# HERALD_HTTP_URL  the notifier's HTTP address (default http://127.0.0.1:7480)
set -euo pipefail

fail() {
  echo "send.sh: $*" >&2
  exit 1
}

for tool in curl jq; do
  command -v "$tool" >/dev/null 2>&1 || fail "$tool is required: install it (apt-get install $tool, brew install $tool)"
done
[ -n "${HERALD_API_KEY:-}" ] || fail "HERALD_API_KEY is not set: run 'set -a; . .herald/dev.env; set +a' first (make run writes .herald/dev.env)"
[ $# -ge 1 ] || fail "usage: send.sh EMAIL [SUBJECT] [BODY]"
url=${HERALD_HTTP_URL:-http://127.0.0.1:7480}
to=$1
subject=${2:-Hello from Herald}
body=${3:-Sent with curl.}

# api METHOD PATH [curl options...] makes one API call and prints the answer. An error answer
# is a google.rpc.Status; its message is printed and the script stops.
# The key goes to curl as a config file on a descriptor rather than as an argument, which any
# user of the machine could read in ps. --retry repeats a call that failed on the way
# (connection refused, 429 and 503 after their Retry-After, ...): safe for the Send because it
# carries an Idempotency-Key, so a repeat answers the first result instead of sending again.
api() {
  local answer
  if ! answer=$(curl --silent --show-error --fail-with-body --retry 5 --request "$1" "$url$2" \
    --config <(printf 'header = "Authorization: Bearer %s"\n' "$HERALD_API_KEY") \
    --header 'Content-Type: application/json' "${@:3}"); then
    [ -n "$answer" ] || fail "$1 $2: no answer from $url (is Herald running? make run starts it)"
    fail "$1 $2: $(jq -r '.message // .' <<<"$answer" 2>/dev/null || echo "$answer")"
  fi
  printf '%s\n' "$answer"
}

# A key of our own for this send: if the answer is lost and curl repeats the request, Herald
# recognises it. uuidgen where there is one (macOS, util-linux), else the kernel's.
if command -v uuidgen >/dev/null 2>&1; then
  key=$(uuidgen)
else
  key=$(cat /proc/sys/kernel/random/uuid)
fi

# jq writes the request, so that quotes in the arguments stay text.
request=$(jq -n --arg to "$to" --arg subject "$subject" --arg body "$body" \
  '{recipient: {address: {email: $to}}, category: "account", content: {subject: $subject, body: $body}}')
sent=$(api POST /v1/notifications:send --header "Idempotency-Key: $key" --data "$request")
id=$(jq -r .notificationId <<<"$sent")
echo "notification $id"

# Poll until no delivery can change on its own any more, for at most a minute. Empty lists are
# left out of answers, hence the // [].
tries=60
for ((try = 1; ; try++)); do
  notification=$(api GET "/v1/notifications/$id")
  waiting=$(jq '[(.notification.deliveries // [])[] | select(.state | IN("DELIVERY_STATE_QUEUED",
    "DELIVERY_STATE_SCHEDULED", "DELIVERY_STATE_WAITING", "DELIVERY_STATE_SENDING", "DELIVERY_STATE_RETRYING"))] | length' <<<"$notification")
  [ "$waiting" -eq 0 ] && break
  if [ "$try" -ge "$tries" ]; then
    echo "send.sh: $waiting deliveries still under way after $tries tries" >&2
    break
  fi
  sleep 1
done

# "CHANNEL_EMAIL" and "DELIVERY_STATE_SENT" print as "email sent".
jq -r '(.notification.deliveries // [])[]
  | "\(.channel | ltrimstr("CHANNEL_") | ascii_downcase) \(.state | ltrimstr("DELIVERY_STATE_") | ascii_downcase)"' \
  <<<"$notification"
[ "$waiting" -eq 0 ]
