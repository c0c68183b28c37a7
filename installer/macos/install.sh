#!/bin/bash
# Install, upgrade or remove the DLP agent on macOS as a LaunchDaemon (silent; for MDM scripts).
#
#   sudo ./install.sh --server URL --token TOKEN [--ca FILE] [--watch PATH]... [--binary FILE]
#   sudo ./install.sh --uninstall [--purge]
#
# First install: copies the binary to /usr/local/bin, writes agent.toml (absolute paths) under
# /Library/Application Support/DLP Agent (0700 root), enrolls, loads the launchd job.
# Upgrade (run again): replaces the binary and reloads the job; agent.toml, credentials and the
# spool are kept, so --server/--ca/--watch only matter on a first install (edit agent.toml later).
# The token may come from DLP_TOKEN instead of --token; it is needed only while not enrolled.
# DESTDIR=/some/dir lays the files down under that directory and nothing else: no launchctl,
# no enrollment (for packaging and tests).
#
# Exit status: 0 done; 2 usage or missing file; 3 not root; 4 enrollment failed; 5 launchd failed.
set -eu

LABEL=com.dlp-endpoint.agent
BIN=/usr/local/bin/dlp-agent
APP_DIR="/Library/Application Support/DLP Agent"
STATE_DIR="$APP_DIR/state"
CONFIG="$APP_DIR/agent.toml"
CA_PATH="$APP_DIR/ca.pem"
LOG_DIR="/Library/Logs/DLP Agent"
PLIST="/Library/LaunchDaemons/$LABEL.plist"

here=$(cd "$(dirname "$0")" && pwd)
destdir=${DESTDIR:-}
server=""
token=${DLP_TOKEN:-}
ca=""
binary="$here/dlp-agent"
uninstall=0
purge=0
watch=()

say() { printf 'dlp-agent install: %s\n' "$*"; }
die() { code=$1; shift; printf 'dlp-agent install: %s\n' "$*" >&2; exit "$code"; }

usage() {
	sed -n '2,16s/^# \{0,1\}//p' "$0" >&2
	exit 2
}

need_value() {
	# An option right after another one is a forgotten value, not a value.
	case ${2:-} in
		''|--*) die 2 "$1 needs a value" ;;
	esac
}

while [ $# -gt 0 ]; do
	case $1 in
		--server) need_value "$@"; server=$2; shift 2 ;;
		--token) need_value "$@"; token=$2; shift 2 ;;
		--ca) need_value "$@"; ca=$2; shift 2 ;;
		--watch) need_value "$@"; watch+=("$2"); shift 2 ;;
		--binary) need_value "$@"; binary=$2; shift 2 ;;
		--uninstall) uninstall=1; shift ;;
		--purge) purge=1; shift ;;
		-h|--help) usage ;;
		*) die 2 "unknown argument $1 (see --help)" ;;
	esac
done

# A TOML basic string (values with line breaks are refused by check_line first).
toml_string() {
	local s=${1//\\/\\\\}
	s=${s//\"/\\\"}
	printf '"%s"' "$s"
}

check_line() {
	case $1 in *$'\n'*|*$'\r'*) die 2 "a value with a line break: $1" ;; esac
}

is_root() { [ "$(id -u)" = 0 ]; }

launchd_loaded() { launchctl print "system/$LABEL" >/dev/null 2>&1; }

unload() {
	if [ -z "$destdir" ] && launchd_loaded; then
		say "stopping $LABEL"
		# bootout of a job that takes a while to exit (the agent drains its queue) may fail with
		# "36: Operation now in progress" although the job does stop: what counts is that it goes.
		launchctl bootout "system/$LABEL" || say "launchctl bootout system/$LABEL returned $?; waiting for the job to go"
		# bootout can return before launchd has let go of the job; bootstrap would then fail.
		for _ in $(seq 1 170); do
			launchd_loaded || return 0
			sleep 1
		done
		die 5 "$LABEL did not stop within 170 s"
	fi
}

if [ "$purge" = 1 ] && [ "$uninstall" = 0 ]; then
	die 2 "--purge goes with --uninstall"
fi

first_install=0
[ -f "$destdir$CONFIG" ] || first_install=1
if [ "$uninstall" = 0 ]; then
	[ -f "$binary" ] || die 2 "no agent binary at $binary (pass --binary FILE)"
	if [ "$first_install" = 1 ]; then
		[ -n "$server" ] || die 2 "a first install needs --server URL"
		case $server in https://*|http://*) ;; *) die 2 "--server must start with https:// or http://" ;; esac
		[ -z "$ca" ] || [ -f "$ca" ] || die 2 "CA file $ca does not exist"
		check_line "$server"
		for path in ${watch[@]+"${watch[@]}"}; do
			check_line "$path"
		done
	fi
	if [ -z "$destdir" ] && [ ! -f "$STATE_DIR/credentials.json" ]; then
		[ -n "$token" ] || die 2 "not enrolled yet: pass --token TOKEN (or DLP_TOKEN)"
		[ -n "$server" ] || die 2 "not enrolled yet: pass --server URL"
	fi
fi

if [ -z "$destdir" ]; then
	[ "$(uname -s)" = Darwin ] || die 2 "this installer is for macOS (DESTDIR=DIR lays the files down elsewhere)"
	is_root || die 3 "run as root (sudo)"
fi

if [ "$uninstall" = 1 ]; then
	unload
	rm -f "$destdir$PLIST" "$destdir$BIN"
	if [ "$purge" = 1 ]; then
		rm -rf "$destdir$APP_DIR" "$destdir$LOG_DIR"
		say "removed the agent, its configuration, credentials, spool and logs"
	else
		say "removed the agent; configuration, credentials and spool stay in $APP_DIR (--purge removes them)"
	fi
	exit 0
fi

unload
mkdir -p "$destdir$(dirname "$BIN")" "$destdir$(dirname "$PLIST")" "$destdir$STATE_DIR" "$destdir$LOG_DIR"
chmod 0700 "$destdir$APP_DIR" "$destdir$STATE_DIR"
chmod 0755 "$destdir$LOG_DIR"
# Copy then rename: a binary being replaced is never seen half-written.
cp "$binary" "$destdir$BIN.new"
chmod 0755 "$destdir$BIN.new"
mv -f "$destdir$BIN.new" "$destdir$BIN"
cp "$here/$LABEL.plist" "$destdir$PLIST"
chmod 0644 "$destdir$PLIST"
if is_root; then
	# launchd refuses a daemon plist not owned by root; gid 0 is wheel on macOS.
	chown 0:0 "$destdir$BIN" "$destdir$PLIST" "$destdir$APP_DIR" "$destdir$STATE_DIR" "$destdir$LOG_DIR"
fi
if [ -z "$destdir" ]; then
	xattr -d com.apple.quarantine "$BIN" 2>/dev/null || true
fi

if [ "$first_install" = 1 ]; then
	ca_line="# ca_file = \"$CA_PATH\"   # PEM CAs for the collector instead of the bundled Mozilla CAs"
	if [ -n "$ca" ]; then
		cp "$ca" "$destdir$CA_PATH"
		chmod 0600 "$destdir$CA_PATH"
		ca_line="ca_file = $(toml_string "$CA_PATH")"
	fi
	[ ${#watch[@]} -gt 0 ] || watch=(/Users)
	watch_list=""
	for path in "${watch[@]}"; do
		watch_list="$watch_list${watch_list:+, }$(toml_string "$path")"
	done
	umask 077
	cat >"$destdir$CONFIG.new" <<TOML
# DLP agent configuration, written by install.sh at the first install and kept on upgrades.
# Keys: docs/agent.md. Check edits with: dlp-agent check-config --config "$CONFIG"

[server]
url = $(toml_string "$server")
$ca_line
credentials = $(toml_string "$STATE_DIR/credentials.json")

[files]
watch = [$watch_list]
exclude = ["**/.cache/**", "**/.git/**", "**/node_modules/**", "**/__pycache__/**", "*.tmp", "*.swp", "*~", "**/Library/**", "**/.Trash/**"]

[usb]
removable_roots = ["/Volumes"]

[clipboard]
# A LaunchDaemon runs outside every user's session and cannot see their pasteboard.
enabled = false

[rules]
bundle_dir = $(toml_string "$STATE_DIR/bundle")

[spool]
path = $(toml_string "$STATE_DIR/spool.db")
TOML
	mv -f "$destdir$CONFIG.new" "$destdir$CONFIG"
	say "wrote $CONFIG"
else
	if [ -n "$server$ca" ] || [ ${#watch[@]} -gt 0 ]; then
		say "kept the existing $CONFIG (--server, --ca and --watch apply to a first install)"
	fi
fi

if [ -n "$destdir" ]; then
	say "DESTDIR set: files laid down under $destdir; not enrolling and not loading launchd"
	exit 0
fi

if [ ! -f "$STATE_DIR/credentials.json" ]; then
	# The token travels in the environment, never on a command line that ps can show.
	if ! DLP_TOKEN=$token "$BIN" enroll --config "$CONFIG" --server "$server"; then
		if [ "$first_install" = 1 ]; then
			# Otherwise the next run would keep this agent.toml and ignore a corrected --server or --ca.
			rm -f "$CONFIG"
			[ -z "$ca" ] || rm -f "$CA_PATH"
		fi
		die 4 "enrollment failed (see above); nothing was started"
	fi
fi

launchctl enable "system/$LABEL" 2>/dev/null || true
# Right after a bootout launchd may still refuse the label for a few seconds (5: Input/output error).
for attempt in 1 2 3 4 5 6; do
	launchctl bootstrap system "$PLIST" && break
	[ "$attempt" -lt 6 ] || die 5 "launchctl bootstrap system $PLIST failed"
	sleep 2
done
say "running: sudo launchctl print system/$LABEL; dlp-agent status --config \"$CONFIG\""
