#!/usr/bin/env bash
# Stop the Notificator SSE server started by ./startup.sh.
#
#   ./shutdown.sh
#
# Sends SIGTERM (open streams are closed cleanly, logs flushed), waits up to
# $NOTIFICATOR_STOP_TIMEOUT seconds (default 15) for the process to exit,
# then SIGKILL as a last resort, and removes the pid file.  Exit status: 0
# stopped (or was not running), 2 stopped only by SIGKILL (not cleanly:
# see the message), 1 still running.  Environment:
#   NOTIFICATOR_PIDFILE       pid file (default: ./notificator.pid)
#   NOTIFICATOR_STOP_TIMEOUT  seconds to wait after SIGTERM (default: 15)
# Works from any directory: relative paths are relative to this script's.
set -u

cd "$(dirname "$(readlink -f "$0")")" || exit 1

. ./daemon-lib.sh
timeout=${NOTIFICATOR_STOP_TIMEOUT:-15}

if [ ! -f "$pidfile" ]; then
    echo "Notificator SSE Server is not running (no pid file $pidfile)"
    exit 0
fi
pid=$(pidfile_pid)

# Is the process still there?  (Not gone, and not a zombie waiting for its
# parent to reap it.)  Identity is checked once, before the first signal:
# while the server shuts down its title changes back.
alive() {
    local state
    if [ -d /proc/self ]; then
        state=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -c1)
    else
        state=$(ps -p "$pid" -o stat= 2>/dev/null | cut -c1)
    fi
    [ -n "$state" ] && [ "$state" != Z ]
}

if [ -z "$pid" ] || ! is_notificator "$pid"; then
    described=$(pidfile_describe)
    rm -f "$pidfile"
    echo "Notificator SSE Server is not running; removed stale pid file $pidfile ($described)"
    exit 0
fi

kill -TERM "$pid" 2>/dev/null
echo "Sent SIGTERM to Notificator SSE Server pid=$pid; waiting up to ${timeout}s"
# Poll ten times a second, bounded by the timeout.
ticks=$(awk -v t="$timeout" 'BEGIN { n = int(t * 10); print (n < 1 ? 1 : n) }')
for _ in $(seq 1 "$ticks"); do
    if ! alive; then
        rm -f "$pidfile"
        echo "Notificator SSE Server stopped pid=$pid"
        exit 0
    fi
    sleep 0.1
done

echo "Notificator SSE Server pid=$pid still running after ${timeout}s; sending SIGKILL" >&2
kill -KILL "$pid" 2>/dev/null
for _ in $(seq 1 50); do
    if ! alive; then
        rm -f "$pidfile"
        echo "Notificator SSE Server killed pid=$pid (SIGKILL); removed pid file $pidfile"
        echo "Notificator SSE Server did not stop cleanly: its streams were not drained and its history not closed (reconnecting clients get a reset); see why in its logs" >&2
        exit 2
    fi
    sleep 0.1
done
echo "Notificator SSE Server pid=$pid did not exit even after SIGKILL" >&2
exit 1
