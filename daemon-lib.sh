# Shared by startup.sh and shutdown.sh (sourced, not run): the pid file and
# how to tell that a pid is a running Notificator.

pidfile=$(realpath -m "${NOTIFICATOR_PIDFILE:-notificator.pid}")

# The command line of process $1 (empty when there is none, or a zombie).
# /proc first: it needs no procps; ps elsewhere.
cmdline() {
    if [ -d /proc/self ]; then
        tr '\0' ' ' < "/proc/$1/cmdline" 2>/dev/null
    else
        ps -p "$1" -o args= 2>/dev/null
    fi
}

# Is process $1 a Notificator?  Its title starts with "notificator", or it
# is still "twistd ... notificator" (before the title is set).  After a
# crash the pid in the pid file may belong to something else by now.
is_notificator() {
    cmdline "$1" | grep -Eq '^notificator|twistd.* notificator'
}

# The pid written in the pid file (digits only; empty if none).
pidfile_pid() {
    [ -f "$pidfile" ] && tr -cd '0-9' < "$pidfile"
}
