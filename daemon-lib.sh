# Shared by startup.sh and shutdown.sh (sourced, not run): the pid file and
# how to tell that a pid is a running Notificator.

pidfile=$(realpath -m "${NOTIFICATOR_PIDFILE:-notificator.pid}")

# The command line of process $1 (empty when there is none, or a zombie).
# /proc first: it needs no procps; ps elsewhere.  The redirect of stderr
# comes first, so a pid that has gone prints nothing.
cmdline() {
    if [ -d /proc/self ]; then
        tr '\0' ' ' 2>/dev/null < "/proc/$1/cmdline"
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

# The pid written in the pid file: empty if there is no file, or if it
# holds anything but one number (then see pidfile_text).
pidfile_pid() {
    local text
    [ -f "$pidfile" ] || return 0
    text=$(pidfile_text)
    case "$text" in
        '' | *[!0-9]*) ;;
        *) echo "$text" ;;
    esac
}

# What the pid file holds, for messages: its first line, surrounding
# blanks removed, at most 40 characters, unprintable bytes shown as "?".
pidfile_text() {
    head -c 200 "$pidfile" 2>/dev/null | head -n 1 | tr -c '[:print:]' '?' \
        | sed 's/^[[:space:]?]*//; s/[[:space:]?]*$//' | cut -c1-40
}

# "pid N" for a pid file holding a number, else what it holds, quoted.
pidfile_describe() {
    local pid text
    pid=$(pidfile_pid)
    if [ -n "$pid" ]; then
        echo "pid $pid"
    else
        text=$(pidfile_text)
        if [ -z "$text" ]; then
            echo "it is empty"
        else
            echo "it holds \"$text\", not a pid"
        fi
    fi
}
