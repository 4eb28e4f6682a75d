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

if [[ ! -d "$work/etc" ]]; then
    cp -a /etc "$work/etc"
    rm -rf "$work/etc/vas" "$work/etc/systemd/system"/vas-*.service
    for f in passwd group shadow gshadow passwd- group- shadow- gshadow-; do
        [[ -f "$work/etc/$f" ]] && sed -i '/^vas:/d' "$work/etc/$f"
    done
fi
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
