# Shared steps of the .deb's maintainer scripts and install.sh (POSIX sh; build-deb.sh inlines
# this file into the maintainer scripts, install.sh sources it).
#
# Every function takes ROOT first: "" on a live system, or the directory a system is being
# assembled in ($DPKG_ROOT for `dpkg --root=DIR --force-script-chrootless`, $DESTDIR for
# install.sh). Under a ROOT nothing touches the running system's users or services.

DLP_USER=dlp-agent
DLP_ETC=/etc/dlp-agent
DLP_STATE=/var/lib/dlp-agent
DLP_LOGS=/var/log/dlp-agent

dlp_say() {
    echo "dlp-agent: $*" >&2
}

# The service account: a system user and group, no login shell, no home directory of its own.
dlp_create_user() {
    root=$1
    if [ -z "$root" ]; then
        getent passwd "$DLP_USER" >/dev/null && return 0
        useradd --system --user-group --no-create-home --home-dir "$DLP_STATE" \
            --shell /usr/sbin/nologin --comment "DLP endpoint agent" "$DLP_USER"
    elif [ -f "$root/etc/passwd" ] && [ -f "$root/etc/group" ]; then
        grep -q "^$DLP_USER:" "$root/etc/passwd" && return 0
        # --prefix edits ROOT/etc/{passwd,group} without chrooting (useradd --root would need
        # a working system inside ROOT; adduser has neither).
        useradd --prefix "$root" --system --user-group --no-create-home --home-dir "$DLP_STATE" \
            --shell /usr/sbin/nologin --comment "DLP endpoint agent" "$DLP_USER"
    else
        dlp_say "no $root/etc/passwd: the $DLP_USER user is not created in $root"
    fi
}

dlp_remove_user() {
    root=$1
    if [ -z "$root" ]; then
        getent passwd "$DLP_USER" >/dev/null || return 0
        userdel "$DLP_USER"
    elif [ -f "$root/etc/passwd" ] && grep -q "^$DLP_USER:" "$root/etc/passwd"; then
        userdel --prefix "$root" "$DLP_USER"
    fi
}

# "uid:gid" of the service account in ROOT's user database, empty when it does not exist.
dlp_owner() {
    root=$1
    if [ -z "$root" ]; then
        getent passwd "$DLP_USER" | awk -F: '{ print $3 ":" $4 }'
    elif [ -f "$root/etc/passwd" ]; then
        awk -F: -v user="$DLP_USER" '$1 == user { print $3 ":" $4 }' "$root/etc/passwd"
    fi
}

# State (spool, credentials, bundles) readable by the service account alone. Without the account
# the directories stay root's; systemd's StateDirectory= hands them over at the first start.
dlp_state_dirs() {
    root=$1
    install -d -m 0755 "$root$DLP_ETC"
    install -d -m 0700 "$root$DLP_STATE"
    install -d -m 0750 "$root$DLP_LOGS"
    owner=$(dlp_owner "$root")
    if [ -n "$owner" ]; then
        chown "$owner" "$root$DLP_STATE" "$root$DLP_LOGS"
    fi
}

# Enroll with $DLP_SERVER and $DLP_TOKEN (and the CA file $DLP_CA, copied to /etc/dlp-agent/ca.pem)
# unless credentials exist (an upgrade or a re-run keeps the agent's identity). The token reaches
# `dlp-agent enroll` through the environment: a command line is visible to every user in ps.
dlp_enroll() {
    root=$1
    binary=$2
    credentials="$root$DLP_STATE/credentials.json"
    if [ -e "$credentials" ]; then
        dlp_say "already enrolled; keeping $DLP_STATE/credentials.json"
        return 0
    fi
    set -- enroll --config "$root$DLP_ETC/agent.toml" --server "$DLP_SERVER"
    if [ -n "${DLP_CA:-}" ]; then
        if [ ! -f "$DLP_CA" ]; then
            dlp_say "CA file $DLP_CA does not exist"
            return 1
        fi
        install -m 0644 "$DLP_CA" "$root$DLP_ETC/ca.pem"
        set -- "$@" --ca "$root$DLP_ETC/ca.pem"
    fi
    if [ -n "$root" ]; then
        # Absolute paths in the configuration name the target system; point this one run into ROOT.
        DLP_AGENT_SERVER_CREDENTIALS=$credentials DLP_TOKEN=$DLP_TOKEN "$root$binary" "$@"
    else
        DLP_TOKEN=$DLP_TOKEN "$root$binary" "$@"
    fi
    if [ -n "$root" ] && [ -n "${DLP_CA:-}" ]; then
        # Enrollment recorded the CA where this run read it, inside ROOT; the installed system
        # reads it at its own path.
        (umask 077 && sed "s|\"$root$DLP_ETC/ca.pem\"|\"$DLP_ETC/ca.pem\"|" "$credentials" >"$credentials.new")
        mv "$credentials.new" "$credentials"
    fi
    owner=$(dlp_owner "$root")
    if [ -n "$owner" ]; then
        chown "$owner" "$credentials"
    fi
}

# True when systemd manages the running system and we are not assembling another root.
dlp_systemd_live() {
    [ -z "$1" ] && [ -d /run/systemd/system ]
}
