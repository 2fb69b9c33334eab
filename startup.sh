#!/usr/bin/env bash
# Start the Notificator SSE server as a daemon (twistd).
#
#   ./startup.sh [ENV] [notificator options...]
#   ./startup.sh restart [ENV] [notificator options...]
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
# "restart": a server with workers (server.workers above 1) gets SIGHUP and
# replaces its workers one at a time while the port stays open (a graceful
# restart: new workers run the installed code and re-read the config
# files; the supervisor keeps the options, listeners, server.workers and
# cluster.redis it started with); this waits until it says it is done
# (at most $NOTIFICATOR_RELOAD_TIMEOUT seconds, default 120).  Any other
# running server is stopped (./shutdown.sh) and started again; a stopped
# one is started.
# Works from any directory: relative paths are relative to this script's.
# A start that fails (configuration error, port in use, missing certificate)
# prints twistd's reason here and appends it to the twistd log too.
set -u

cd "$(dirname "$(readlink -f "$0")")" || exit 1

restart=
if [ "${1:-}" = restart ]; then
    restart=1
    shift
fi
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
# The directory resolved, the file as named (a link there is not followed).
twistd_log=${NOTIFICATOR_TWISTD_LOG:-log/twistd.log}
twistd_log=$(realpath -m "$(dirname "$twistd_log")")/$(basename "$twistd_log")

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

# A graceful restart: SIGHUP to the supervisor of the workers, then wait
# for its word in twistd's log ("reload done", or why it stopped).
reload_workers() {
    local pid=$1 size timeout ticks said
    timeout=${NOTIFICATOR_RELOAD_TIMEOUT:-120}
    size=$(wc -c < "$twistd_log" 2>/dev/null || echo 0)
    kill -HUP "$pid" || exit 1
    echo "Sent SIGHUP to Notificator SSE Server pid=$pid: its workers are replaced one at a time; waiting up to ${timeout}s"
    ticks=$(awk -v t="$timeout" 'BEGIN { n = int(t * 10); print (n < 1 ? 1 : n) }')
    for _ in $(seq 1 "$ticks"); do
        said=$(tail -c "+$((size + 1))" "$twistd_log" 2>/dev/null \
            | grep -E 'reload done|reload stopped|reload refused|reload failed' | head -n 1)
        case "$said" in
            *"reload done"*)
                echo "Notificator SSE Server restarted pid=$pid: ${said#*] }"
                exit 0 ;;
            ?*)
                echo "Notificator SSE Server pid=$pid: ${said#*] }; see $twistd_log" >&2
                exit 1 ;;
        esac
        sleep 0.1
    done
    echo "Notificator SSE Server pid=$pid: no word of the restart after ${timeout}s; see $twistd_log" >&2
    exit 1
}

if pid=$(running_pid); then
    if [ -z "$restart" ]; then
        echo "Notificator SSE Server is already running pid=$pid (pid file $pidfile)" >&2
        exit 1
    fi
    if cmdline "$pid" | grep -q ' supervisor of '; then
        reload_workers "$pid"
    fi
    ./shutdown.sh || exit $?
fi
if [ -e "$pidfile" ]; then
    if [ -n "$(pidfile_pid)" ]; then
        echo "Removing stale pid file $pidfile (pid $(pidfile_pid) is not a running Notificator)"
    else
        echo "Removing stale pid file $pidfile ($(pidfile_describe))"
    fi
    rm -f "$pidfile"
fi

# The umask the daemon runs with: twistd's 077, or a --umask given in
# NOTIFICATOR_TWISTD_ARGS.  twistd opens its log before it daemonizes, with
# this shell's umask, so the log is created here with the daemon's.  And
# the user and group it runs as, when started as root with --uid/--gid.
daemon_umask=077
daemon_uid=
daemon_gid=
prev=
set -f
# shellcheck disable=SC2086
for word in ${NOTIFICATOR_TWISTD_ARGS:-}; do
    case "$prev" in
        --umask) daemon_umask=$word ;;
        --uid | -u) daemon_uid=$word ;;
        --gid | -g) daemon_gid=$word ;;
    esac
    case "$word" in
        --umask=*) daemon_umask=${word#--umask=} ;;
        --uid=*) daemon_uid=${word#--uid=} ;;
        --gid=*) daemon_gid=${word#--gid=} ;;
        -u?*) daemon_uid=${word#-u} ;;
        -g?*) daemon_gid=${word#-g} ;;
    esac
    prev=$word
done
set +f
case "$daemon_umask" in '' | *[!0-7]*) daemon_umask=077 ;; esac

# The directories of the pid file and of twistd's log.  Started as root
# with --uid, the daemon rotates twistd.log as that user, and twistd's log
# directory is the server's (server.log.dir, log) unless moved: what is
# made here for the log is that user's (and group's: theirs, or --gid).
# The pid file stays root's.
mkdir -p "$(dirname "$pidfile")" || exit 1
log_dir=$(dirname "$twistd_log")
made=
dir=$log_dir
while [ ! -e "$dir" ] && [ ! -L "$dir" ]; do
    made=$dir
    dir=$(dirname "$dir")
done
mkdir -p "$log_dir" || exit 1
if [ -n "$daemon_uid" ] && [ "$(id -u)" = 0 ]; then
    if [ -n "$made" ]; then
        chown -R -P -h "$daemon_uid:$daemon_gid" "$made" || exit 1
    fi
    # Root writes twistd.log in a directory that user may write: not
    # through a link they put there.
    if [ -L "$twistd_log" ] || { [ -e "$twistd_log" ] && [ ! -f "$twistd_log" ]; }; then
        echo "startup.sh: $twistd_log is not a plain file (a link?); as root, not writing it" >&2
        exit 1
    fi
fi
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
