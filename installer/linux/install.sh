#!/bin/sh
# Install the dlp-agent service on a Linux machine without dpkg (the .deb does the same with dpkg):
#
#   install.sh --server URL --token TOKEN [--ca FILE] [--watch PATH]... [--binary FILE]
#   install.sh --uninstall [--purge]
#
# Same layout as the .deb, but the binary goes to /usr/local/bin and the unit to /etc/systemd/system.
# Running it again is an upgrade: the binary and unit are replaced; the configuration, spool and
# credentials are kept (--server and --token are then optional). The token may come from DLP_TOKEN
# instead of --token, which keeps it out of the process list. DESTDIR=DIR installs into DIR and
# leaves the running system's users and services alone.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=installer/linux/setup-functions.sh
. "$here/setup-functions.sh"

BINDIR=/usr/local/bin
UNIT=/etc/systemd/system/dlp-agent.service
root=${DESTDIR:-}

usage() {
    cat >&2 <<EOF
usage: $0 --server URL --token TOKEN [--ca FILE] [--watch PATH]... [--binary FILE]
       $0 --uninstall [--purge]
EOF
    exit 2
}

fail() {
    dlp_say "$*"
    exit 1
}

need_value() {
    if [ $# -lt 2 ] || [ -z "$2" ]; then
        dlp_say "$1 needs a value"
        usage
    fi
}

# A TOML basic string: backslashes and double quotes escaped.
toml_string() {
    printf '"%s"' "$(printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')"
}

server=""
token=${DLP_TOKEN:-}
ca=""
binary=""
watch=""
uninstall=false
purge=false
while [ $# -gt 0 ]; do
    case "$1" in
    --server) need_value "$@"; server=$2; shift 2 ;;
    --token) need_value "$@"; token=$2; shift 2 ;;
    --ca) need_value "$@"; ca=$2; shift 2 ;;
    --binary) need_value "$@"; binary=$2; shift 2 ;;
    --watch)
        need_value "$@"
        watch="${watch:+$watch, }$(toml_string "$2")"
        shift 2
        ;;
    --uninstall) uninstall=true; shift ;;
    --purge) purge=true; shift ;;
    -h | --help) usage ;;
    *) dlp_say "unknown argument: $1"; usage ;;
    esac
done

if [ -z "$root" ] && [ "$(id -u)" != 0 ]; then
    fail "run as root (or set DESTDIR to install into a directory)"
fi

uninstall() {
    if dlp_systemd_live "$root"; then
        systemctl disable --now dlp-agent.service || true
    fi
    rm -f "$root$BINDIR/dlp-agent" "$root$UNIT"
    if dlp_systemd_live "$root"; then
        systemctl daemon-reload
    fi
    if $purge; then
        rm -rf "$root$DLP_STATE" "$root$DLP_LOGS" "$root$DLP_ETC"
        dlp_remove_user "$root"
        dlp_say "removed, with its configuration, spool and credentials"
    else
        dlp_say "removed; $DLP_ETC and $DLP_STATE (configuration, spool, identity) are kept: --purge removes them"
    fi
}

if $uninstall; then
    uninstall
    exit 0
fi
if $purge; then
    dlp_say "--purge goes with --uninstall"
    usage
fi

if [ -z "$binary" ]; then
    # Beside this script in a release folder, else the build output in a source checkout.
    for candidate in "$here/dlp-agent" "$here/../../dist/dlp-agent"; do
        if [ -x "$candidate" ]; then
            binary=$candidate
            break
        fi
    done
    [ -n "$binary" ] || fail "no dlp-agent binary beside $0 or in dist/: pass --binary FILE (make agent-binary builds it)"
fi
if [ ! -f "$binary" ] || [ ! -x "$binary" ]; then
    fail "--binary $binary is not an executable file"
fi
[ -z "$ca" ] || [ -f "$ca" ] || fail "--ca $ca: no such file"
enrolled=false
[ -e "$root$DLP_STATE/credentials.json" ] && enrolled=true
if ! $enrolled; then
    [ -n "$server" ] || fail "--server URL is required (the collector, e.g. https://collector.example:8443)"
    [ -n "$token" ] || fail "--token TOKEN (or DLP_TOKEN in the environment) is required: dlp-server token create makes one"
fi

dlp_create_user "$root"

# A new file renamed over the old one: a running agent keeps its (deleted) binary until restarted.
install -d -m 0755 "$root$BINDIR"
install -m 0755 "$binary" "$root$BINDIR/.dlp-agent.new"
mv -f "$root$BINDIR/.dlp-agent.new" "$root$BINDIR/dlp-agent"

install -d -m 0755 "$(dirname "$root$UNIT")"
sed "s|@BINDIR@|$BINDIR|g" "$here/dlp-agent.service.in" >"$root$UNIT.new"
chmod 0644 "$root$UNIT.new"
mv -f "$root$UNIT.new" "$root$UNIT"

dlp_state_dirs "$root"
config="$root$DLP_ETC/agent.toml"
if [ -e "$config" ]; then
    [ -z "$watch" ] || dlp_say "keeping the existing $DLP_ETC/agent.toml: --watch is not applied (edit [files] watch there)"
    [ -z "$ca" ] || dlp_say "keeping the existing $DLP_ETC/agent.toml: --ca is used to enroll only"
else
    # The shipped default, with --watch as the watch list and the copied CA as [server] ca_file.
    # (ENVIRON, not awk -v, which would interpret backslashes in paths.)
    WATCH_LINE=""
    [ -z "$watch" ] || WATCH_LINE="watch = [$watch]"
    CA_LINE=""
    [ -z "$ca" ] || CA_LINE="ca_file = \"$DLP_ETC/ca.pem\""
    WATCH_LINE=$WATCH_LINE CA_LINE=$CA_LINE awk '
        ENVIRON["WATCH_LINE"] != "" && /^watch = / { print ENVIRON["WATCH_LINE"]; next }
        { print }
        ENVIRON["CA_LINE"] != "" && /^credentials = / { print ENVIRON["CA_LINE"] }
    ' "$here/agent.toml" >"$config.new"
    chmod 0644 "$config.new"
    "$root$BINDIR/dlp-agent" check-config --config "$config.new" >/dev/null ||
        fail "the configuration written to $DLP_ETC/agent.toml is invalid (see above)"
    mv -f "$config.new" "$config"
fi

if $enrolled; then
    dlp_say "already enrolled; keeping $DLP_STATE/credentials.json"
else
    DLP_SERVER=$server DLP_TOKEN=$token DLP_CA=$ca dlp_enroll "$root" "$BINDIR/dlp-agent"
fi

if dlp_systemd_live "$root"; then
    systemctl daemon-reload
    systemctl enable dlp-agent.service
    systemctl restart dlp-agent.service
    dlp_say "installed and running: systemctl status dlp-agent; dlp-agent status --config $DLP_ETC/agent.toml"
elif [ -z "$root" ]; then
    dlp_say "installed; no systemd here: start $BINDIR/dlp-agent run --config $DLP_ETC/agent.toml with your init system"
else
    dlp_say "installed into $root"
fi
