#!/bin/sh
# Give Nacos's built-in `nacos` user a password of yours instead of "nacos" (compose.yml's nacos-init runs this;
# tests/test_real_nacos_auth.py runs it against a Nacos with auth on).
#
#   NACOS_URL=http://127.0.0.1:8848/nacos NACOS_NEW_PASSWORD=... sh deploy/nacos-init.sh
#
# Idempotent: if the new password already logs in, nothing changes. Else it logs in with the built-in one, sets
# the new one, and checks that it logs in. It retries for up to NACOS_INIT_WAIT seconds (60) while Nacos is
# unreachable or not ready, and while it still refuses the new password: with nacos.core.auth.caching.enabled,
# Nacos serves users from a cache that is empty for ~5 s after start and refreshed every 15 s. Exits 0 once the
# new password logs in; 1 if Nacos refuses both passwords, stays unreachable, or answers something unexpected.
# Passwords and the token reach curl on its standard input (a config file), never on a command line that `ps`
# would show.
set -eu

url=${NACOS_URL:?set NACOS_URL, e.g. http://nacos:8848/nacos}
new=${NACOS_NEW_PASSWORD:?set NACOS_NEW_PASSWORD}
wait_s=${NACOS_INIT_WAIT:-60}

say() { echo "nacos-init: $*"; }
fail() { echo "nacos-init: $*" >&2; exit 1; }

# A value in curl's config syntax: double-quoted, with \ and " escaped.
quoted() { printf '"%s"' "$(printf '%s' "$1" | sed 's/[\\"]/\\&/g')"; }

# call METHOD PATH: a request with username=nacos plus the curl config lines on stdin (a here-document, not a
# pipe: a pipeline would run call in a subshell). Sets $code and $body; status 2 (and $error) if Nacos cannot
# be reached.
call() {
  out=$(curl -s -m 10 -K - -w '\n%{http_code}' -X "$1" --data-urlencode username=nacos "$url$2") ||
    { error="cannot reach Nacos at $url (curl exit status $?)"; return 2; }
  code=$(printf '%s\n' "$out" | tail -n 1)
  body=$(printf '%s\n' "$out" | sed '$d')
}

# login PASSWORD: status 0 (and $token) if Nacos accepts it, 1 if it refuses it, 2 (and $error) if it cannot
# tell yet: unreachable, or an error such as "User nacos not found" while its user cache is still empty.
login() {
  token=
  call POST /v1/auth/login <<EOF || return 2
data-urlencode = $(quoted "password=$1")
EOF
  case $code in
    200) token=$(printf '%s\n' "$body" | sed -n 's/.*"accessToken":"\([^"]*\)".*/\1/p') ;;
    401 | 403) return 1 ;;
    *) error="Nacos at $url answered a login with HTTP $code: $body"; return 2 ;;
  esac
}

waited=0
pause() {  # one more second of the NACOS_INIT_WAIT budget, or status 1 when it is spent
  [ "$waited" -lt "$wait_s" ] || return 1
  sleep 1
  waited=$((waited + 1))
}

status=2
while [ "$status" = 2 ]; do
  status=0
  login "$new" || status=$?
  [ "$status" != 2 ] || pause || fail "$error"
done
[ "$status" = 1 ] || { say "the nacos user's password is already set; nothing to do"; exit 0; }

status=2
while [ "$status" = 2 ]; do
  status=0
  login nacos || status=$?
  [ "$status" != 2 ] || pause || fail "$error"
done
[ "$status" = 0 ] || fail "Nacos at $url refuses user nacos with both NACOS_NEW_PASSWORD and the built-in password" \
  "(was it changed to another one? then give imray that one as IMRAY_NACOS_PASSWORD)"
[ -n "$token" ] || fail "Nacos at $url gave no access token (is its auth off? then there is no password to set)"

call PUT /v1/auth/users <<EOF || fail "$error"
header = $(quoted "Authorization: Bearer $token")
data-urlencode = $(quoted "newPassword=$new")
EOF
[ "$code" = 200 ] || fail "Nacos refused to change the password: HTTP $code $body"

until login "$new"; do
  pause || fail "the password was changed, but Nacos still refuses it after ${wait_s} s"
done
say "the nacos user's password is set (Nacos accepted it after ${waited} s)"
