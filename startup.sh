#!/usr/bin/env bash
# Start the Notificator SSE server as a daemon (twistd).
#
#   ./startup.sh [ENV] [notificator options...]
#
# ENV is the config environment (conf/<ENV>.json): the first argument if it
# does not start with "-", else $NOTIFICATOR_ENV, else "development" (as for
# "twistd -n notificator"; a production install runs "./startup.sh production"
# or sets NOTIFICATOR_ENV=production).
# Further arguments go to "twistd notificator", e.g. --listen tcp:3001 or
# --config /etc/notificator.  Environment (all optional):
#   NOTIFICATOR_PIDFILE      pid file              (default: ./notificator.pid)
#   NOTIFICATOR_TWISTD_LOG   twistd's own log      (default: ./log/twistd.log)
#   NOTIFICATOR_TWISTD       twistd to run         (default: ./venv/bin/twistd,
#                            ./.venv/bin/twistd, else twistd on the PATH)
#   NOTIFICATOR_TWISTD_ARGS  extra twistd options, e.g. "--uid=sse --gid=sse"
# Works from any directory: relative paths are relative to this script's.
# A start that fails (configuration error, port in use, missing certificate)
# prints twistd's reason here and appends it to the twistd log too.
set -u

cd "$(dirname "$(readlink -f "$0")")" || exit 1

env_name=${NOTIFICATOR_ENV:-development}
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
    env_name=$1
    shift
fi
# An explicit --env among the notificator options wins (it comes last on
# twistd's command line); name that one in the messages too.
prev=
for arg in "$@"; do
    case "$prev" in --env|-e) env_name=$arg ;; esac
    case "$arg" in --env=*) env_name=${arg#--env=} ;; esac
    prev=$arg
done
twistd_log=$(realpath -m "${NOTIFICATOR_TWISTD_LOG:-log/twistd.log}")

twistd=${NOTIFICATOR_TWISTD:-}
if [ -z "$twistd" ]; then
    for candidate in venv/bin/twistd .venv/bin/twistd; do
        if [ -x "$candidate" ]; then
            twistd=$candidate
            break
        fi
    done
fi
if [ -z "$twistd" ]; then
    twistd=$(command -v twistd) || {
        echo "startup.sh: twistd not found: install Notificator (pip install .) or set NOTIFICATOR_TWISTD" >&2
        exit 1
    }
fi

. ./daemon-lib.sh

# The pid in the pid file, if it is a running Notificator.
running_pid() {
    local pid
    pid=$(pidfile_pid)
    [ -n "$pid" ] && is_notificator "$pid" || return 1
    echo "$pid"
}

if pid=$(running_pid); then
    echo "Notificator SSE Server is already running pid=$pid (pid file $pidfile)" >&2
    exit 1
fi
if [ -e "$pidfile" ]; then
    if [ -n "$(pidfile_pid)" ]; then
        echo "Removing stale pid file $pidfile (pid $(pidfile_pid) is not a running Notificator)"
    else
        echo "Removing stale pid file $pidfile ($(pidfile_describe))"
    fi
    rm -f "$pidfile"
fi

mkdir -p "$(dirname "$pidfile")" "$(dirname "$twistd_log")" || exit 1

# The umask the daemon runs with: twistd's 077, or a --umask given in
# NOTIFICATOR_TWISTD_ARGS.  twistd opens its log before it daemonizes, with
# this shell's umask, so the log is created here with the daemon's.
daemon_umask=077
prev=
set -f
# shellcheck disable=SC2086
for word in ${NOTIFICATOR_TWISTD_ARGS:-}; do
    case "$prev" in --umask) daemon_umask=$word ;; esac
    case "$word" in --umask=*) daemon_umask=${word#--umask=} ;; esac
    prev=$word
done
set +f
case "$daemon_umask" in '' | *[!0-7]*) daemon_umask=077 ;; esac
if [ ! -e "$twistd_log" ]; then
    (umask "$daemon_umask" && : >> "$twistd_log") || exit 1
fi

# Append what twistd printed to its log, one "<time> [startup.sh] <line>"
# each, as twistd writes its own lines: an error found before twistd's
# logging starts (a configuration error) is otherwise only on the terminal.
to_twistd_log() {
    local stamp
    stamp=$(date +%Y-%m-%dT%H:%M:%S%z)
    sed "s/^/$stamp [startup.sh] /" "$1" >> "$twistd_log"
}

# twistd forks; the parent exits once the service has started (listening)
# or failed, with twistd's own message on failure.
out=$(mktemp "${TMPDIR:-/tmp}/notificator-start.XXXXXX") || exit 1
trap 'rm -f "$out"' EXIT
# shellcheck disable=SC2086
"$twistd" --pidfile "$pidfile" --logfile "$twistd_log" ${NOTIFICATOR_TWISTD_ARGS:-} \
    notificator --env "$env_name" "$@" > "$out" 2>&1
status=$?
cat "$out" >&2
if [ $status -ne 0 ]; then
    [ -s "$out" ] || echo "twistd exited with status $status" > "$out"
    to_twistd_log "$out"
    echo "Notificator SSE Server failed to start (twistd exit $status); see $twistd_log" >&2
    exit $status
fi

# The daemon writes its pid file before the parent returns; allow a moment.
for _ in $(seq 1 50); do
    if pid=$(running_pid); then
        echo "Notificator SSE Server is running pid=$pid (env $env_name, log $twistd_log)"
        exit 0
    fi
    sleep 0.1
done
echo "Notificator SSE Server did not stay up; see $twistd_log" >&2
exit 1
