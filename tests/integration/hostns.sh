#!/usr/bin/env bash
# Run a command as root on this host's real root filesystem, in a private mount namespace in
# which the paths an install writes are redirected into WORK (kept between runs), so that
# `./install.sh` and `./install.sh --uninstall` run exactly as on a host, without --root:
#   /etc                         a copy (WORK/etc; useradd/groupadd change the copy), made
#                                once, without any vas account, /etc/vas or vas unit
#   /opt /var/lib /usr/local/bin WORK/root/...: new entries land there; what the host had
#                                is bound back in, except the paths listed in VAS_NS_HIDE
#   /run/systemd                 hidden: no unit is started on the real host
#   hostns.sh WORK -- COMMAND...
set -euo pipefail
work="$1"
shift
[[ "${1:-}" == -- ]] && shift
if [[ -z "${VAS_NS_INSIDE:-}" ]]; then
    VAS_NS_INSIDE=1 exec unshare --mount --propagation private "$0" "$work" -- "$@"
fi

# /etc is live: other tests add and remove accounts on this host while it is copied, and
# useradd's lock and temporary files (NAME.lock, NAME+) come and go between listing and copy.
# Those are skipped; any other entry that fails to copy fails the run.  The copy is made under
# another name and renamed, so a copy cut short is never taken for a whole one.
copy_etc() {
    local part="$work/etc.part" entry err
    rm -rf "$part"
    mkdir "$part"
    chown --reference=/etc "$part"
    chmod --reference=/etc "$part"
    for entry in /etc/* /etc/.[!.]*; do
        case "${entry##*/}" in *.lock | *+) continue ;; esac
        [[ -e "$entry" || -L "$entry" ]] || continue
        if ! err=$(cp -a "$entry" "$part/" 2>&1); then
            [[ -e "$entry" || -L "$entry" ]] && { echo "hostns.sh: copying $entry: $err" >&2; exit 1; }
        fi
    done
    rm -rf "$part/vas" "$part/systemd/system"/vas-*.service
    for entry in passwd group shadow gshadow passwd- group- shadow- gshadow-; do
        [[ -f "$part/$entry" ]] && sed -i '/^vas:/d' "$part/$entry"
    done
    mv "$part" "$work/etc"
}
[[ -d "$work/etc" ]] || copy_etc
mount --bind "$work/etc" /etc

overlay() {
    local dir="$1" mine="$work/root$1" keep="$work/keep$1" entry name
    mkdir -p "$mine" "$keep"
    mount --bind "$dir" "$keep"
    for entry in "$keep"/* "$keep"/.[!.]*; do
        [[ -e "$entry" || -L "$entry" ]] || continue
        name="$mine/${entry##*/}"
        case " ${VAS_NS_HIDE:-} " in *" $dir/${entry##*/} "*) continue ;; esac
        if [[ -L "$entry" ]]; then
            [[ -L "$name" ]] || cp -P "$entry" "$name"
            continue
        fi
        if [[ -d "$entry" ]]; then mkdir -p "$name"; else [[ -e "$name" ]] || touch "$name"; fi
        mount --bind "$entry" "$name"
    done
    mount --rbind "$mine" "$dir"
}
overlay /opt
overlay /var/lib
overlay /usr/local/bin
if [[ -d /run/systemd ]]; then mount -t tmpfs -o mode=0755 vas-test-no-systemd /run/systemd; fi
exec "$@"
