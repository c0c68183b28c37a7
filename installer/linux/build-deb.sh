#!/bin/sh
# Build the dlp-agent .deb from a one-file binary (make agent-binary):
#
#   installer/linux/build-deb.sh BINARY OUTDIR [VERSION]
#
# VERSION defaults to the version the binary reports (agent.__version__). Prints the .deb's path.
set -eu

usage() {
    echo "usage: $0 BINARY OUTDIR [VERSION]" >&2
    exit 2
}

if [ $# -lt 2 ] || [ $# -gt 3 ]; then
    usage
fi
binary=$1
outdir=$2
here=$(cd "$(dirname "$0")" && pwd)

if [ ! -f "$binary" ] || [ ! -x "$binary" ]; then
    echo "$0: $binary is not an executable file (build it with make agent-binary)" >&2
    exit 1
fi
if [ $# -eq 3 ]; then
    version=$3
else
    version=$("$binary" version | awk '{ print $2 }')
fi
case "$version" in
[0-9]*) ;;
*)
    echo "$0: '$version' is not a Debian version (it must start with a digit)" >&2
    exit 1
    ;;
esac
arch=$(dpkg --print-architecture)

staging=$(mktemp -d)
trap 'rm -rf "$staging"' EXIT
pkg=$staging/dlp-agent

install -D -m 0755 "$binary" "$pkg/usr/bin/dlp-agent"
install -d -m 0755 "$pkg/lib/systemd/system"
sed 's|@BINDIR@|/usr/bin|g' "$here/dlp-agent.service.in" >"$pkg/lib/systemd/system/dlp-agent.service"
chmod 0644 "$pkg/lib/systemd/system/dlp-agent.service"
install -D -m 0644 "$here/agent.toml" "$pkg/etc/dlp-agent/agent.toml"
install -d -m 0755 "$pkg/usr/share/doc/dlp-agent"
printf '%s\n' "dlp-agent: endpoint data-loss prevention agent." "" \
    "License: Apache-2.0 (see /usr/share/common-licenses/Apache-2.0)." \
    >"$pkg/usr/share/doc/dlp-agent/copyright"
chmod 0644 "$pkg/usr/share/doc/dlp-agent/copyright"

install -d -m 0755 "$pkg/DEBIAN"
for script in postinst prerm postrm; do
    # The shared steps are inlined: postrm runs after the package's own files are gone.
    sed -e "/^#@SETUP_FUNCTIONS@\$/{r $here/setup-functions.sh" -e 'd;}' \
        "$here/debian/$script" >"$pkg/DEBIAN/$script"
    chmod 0755 "$pkg/DEBIAN/$script"
done
install -m 0644 "$here/debian/conffiles" "$pkg/DEBIAN/conffiles"
size_kb=$(du -sk --exclude=DEBIAN "$pkg" | cut -f1)
sed -e "s|@VERSION@|$version|" -e "s|@ARCH@|$arch|" -e "s|@SIZE_KB@|$size_kb|" \
    "$here/debian/control.in" >"$pkg/DEBIAN/control"

mkdir -p "$outdir"
deb="$outdir/dlp-agent_${version}_${arch}.deb"
# gzip: the binary inside is already compressed, and xz would only add build time.
dpkg-deb --root-owner-group -Zgzip --build "$pkg" "$deb" >/dev/null
echo "$deb"
