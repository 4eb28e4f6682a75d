# Sourced by install.sh: the host install (production) and uninstall.
# Everything is idempotent: each step says what it changed, or nothing.
# shellcheck shell=bash

OPT=/opt/vas
ETC=/etc/vas
STATE=/var/lib/vas
UNITDIR=/etc/systemd/system
BINDIR=/usr/local/bin
COMMANDS=(vas-agent vasctl vas-exporter)
UNITS=(vas-agent.service vas-exporter.service)
changed=0
config_ok=1  # 0: the kept /etc/vas/streams.yaml failed its --check: no agent or exporter is (re)started

change() { changed=1; log "$*"; }

systemd_running() { [[ -z "$PREFIX" && -d /run/systemd/system ]]; }

host_install() {
    [[ $EUID -eq 0 ]] || die "installing on a host needs root: sudo ./install.sh"
    local missing=() pkg
    for pkg in "${RUNTIME_PACKAGES[@]}"; do package_installed "$pkg" || missing+=("$pkg"); done
    if [[ ${#missing[@]} -gt 0 ]]; then apt_install "${missing[@]}"; changed=1; fi
    ensure_user
    install_code
    install_config
    install_dirs
    if [[ "${1:-0}" -eq 1 ]]; then host_install_sfu; fi
    install_units
    start_units
    if [[ $changed -eq 0 ]]; then
        log "nothing to do: vas is installed and up to date${PREFIX:+ in $PREFIX}"
    fi
}

ensure_user() {
    if ! getent group vas >/dev/null; then
        groupadd --system vas
        change "created the system group vas"
    fi
    if ! getent passwd vas >/dev/null; then
        useradd --system --gid vas --home-dir "$STATE" --no-create-home --shell /usr/sbin/nologin vas
        change "created the system user vas"
    fi
}

# The checkout's code, as one hash: a newer checkout means an upgrade.
code_hash() {
    # The version too: a new tag or commit on the same files is still reported truthfully.
    {
        find agent exporter config/streams.schema.json config/streams.example.yaml pyproject.toml constraints.txt \
            -type f ! -name '*.pyc' ! -name _build.py -print0 | sort -z | xargs -0 sha256sum
        "$(pick_python)" -m agent.version
    } | sha256sum | cut -d' ' -f1
}

install_code() {
    local dest="$PREFIX$OPT" hash
    hash="$(code_hash)"
    if [[ -x "$dest/venv/bin/vas-agent" && "$(cat "$dest/.installed" 2>/dev/null)" == "$hash" ]]; then
        log "code: up to date in $dest"
    else
        install -d -m 0755 "$dest" "$dest/config"
        rm -rf "$dest/src"
        mkdir -p "$dest/src"
        cp -r agent exporter pyproject.toml README.md "$dest/src/"
        find "$dest/src" -name __pycache__ -prune -exec rm -rf {} +
        # Which version runs: the checkout's tag and commit, frozen into the installed package.
        python3 -m agent.version --module >"$dest/src/agent/_build.py"
        install -m 0644 config/streams.schema.json config/streams.example.yaml "$dest/config/"
        local fresh=0 wheels
        if [[ ! -x "$dest/venv/bin/python" ]]; then
            "$(pick_python)" -m venv "$dest/venv"
            fresh=1
        fi
        # Built once, then installed with its dependencies; over an older install of the same
        # version number (new code), the package itself is replaced too.
        wheels="$(mktemp -d)"
        pip_wheel "$dest/venv/bin/python" --no-deps -w "$wheels" "$dest/src"
        pip_install "$dest/venv/bin/python" "$wheels"/*.whl
        [[ $fresh -eq 1 ]] || pip_install "$dest/venv/bin/python" --no-deps --force-reinstall "$wheels"/*.whl
        rm -rf "$wheels"
        echo "$hash" >"$dest/.installed"
        change "code: installed $("$dest/venv/bin/vas-agent" --version) into $dest/venv"
    fi
    install -d -m 0755 "$PREFIX$BINDIR"
    local cmd
    for cmd in "${COMMANDS[@]}"; do
        if [[ "$(readlink "$PREFIX$BINDIR/$cmd" 2>/dev/null)" != "$OPT/venv/bin/$cmd" ]]; then
            ln -sfn "$OPT/venv/bin/$cmd" "$PREFIX$BINDIR/$cmd"
            change "linked $BINDIR/$cmd"
        fi
    done
}

install_config() {
    local etc="$PREFIX$ETC"
    install -d -m 0750 -o root -g vas "$etc"
    if [[ ! -e "$etc/streams.yaml" ]]; then
        install -m 0640 -o root -g vas /dev/null "$etc/streams.yaml"
        starter_config >"$etc/streams.yaml"
        change "wrote a starter $ETC/streams.yaml (no cameras yet; every key: $ETC/streams.example.yaml)"
    else
        log "kept your $ETC/streams.yaml; checking it:"
        if ! "$PREFIX$OPT/venv/bin/vas-agent" --config "$etc/streams.yaml" --check; then
            config_ok=0
            log "fix the errors above, then: systemctl reload vas-agent"
        fi
    fi
    if ! cmp -s config/streams.example.yaml "$etc/streams.example.yaml"; then
        install -m 0644 config/streams.example.yaml "$etc/streams.example.yaml"
        change "updated $ETC/streams.example.yaml (reference, every key)"
    fi
    if [[ ! -e "$etc/tokens" ]]; then
        install -m 0640 -o root -g vas /dev/null "$etc/tokens"
        local token
        token="$("$PREFIX$OPT/venv/bin/vasctl" token --tokens-file "$etc/tokens" add admin --scope admin | tail -1)"
        change "created $ETC/tokens (0640 root:vas) with a first admin token, shown only now:"
        printf '    %s\n' "$token"
        log "it authorizes the exporter's changes (POST/DELETE under /v2, e.g. cleanup, restart):" \
            "send it as 'Authorization: Bearer <token>'; more: vasctl token add NAME --scope heartbeat|admin"
    fi
    warn_open_reads "$etc/streams.yaml"
}

# Reads (health, status, metrics) need no token: say so when anyone on the network can make them.
warn_open_reads() {
    local listen
    local check listen
    check="$("$PREFIX$OPT/venv/bin/vas-exporter" --config "$1" --check 2>/dev/null)"
    [[ "$check" == *"reads open"* ]] || return 0  # exporter.require_read_token is on
    listen="$(sed -n 's/^ok: .*: listen \([^ ,]*\).*/\1/p' <<<"$check")"
    case "$listen" in
        0.0.0.0:*|::*|\[::\]:*|:*)
            log "warning: the exporter listens on all interfaces ($listen): its read API (/v2/health/*, /v2/metrics)" \
                "answers anyone who can reach this host without a token; firewall the port, set exporter.listen" \
                "to an internal address, or set exporter.require_read_token: true in $ETC/streams.yaml" ;;
    esac
}

starter_config() {
    cat <<YAML
# yaml-language-server: \$schema=$OPT/config/streams.schema.json
# The cameras of this host.  Every key, commented: $ETC/streams.example.yaml
# After editing: vas-agent --check, then systemctl reload vas-agent.
version: 1
recordings:
  root: $STATE/recordings
exporter:
  listen: 0.0.0.0:8080
  tokens_file: $ETC/tokens
streams:
  # One entry per camera, indented under streams: like this one (uncomment it):
  # lobby:
  #   url: rtsp://admin:\${LOBBY_PASSWORD}@192.0.2.10:554/stream1  # the password from /etc/vas/environment
YAML
}

install_dirs() {
    local dir
    for dir in "$PREFIX$STATE" "$PREFIX$STATE/recordings"; do
        if [[ ! -d "$dir" ]]; then
            install -d -m 0750 -o vas -g vas "$dir"
            change "created ${dir#"$PREFIX"} (vas:vas 0750)"
        fi
    done
}

install_units() {
    install -d -m 0755 "$PREFIX$UNITDIR"
    local unit
    units_changed=0
    for unit in "${UNITS[@]}"; do
        if ! cmp -s "systemd/$unit" "$PREFIX$UNITDIR/$unit"; then
            install -m 0644 "systemd/$unit" "$PREFIX$UNITDIR/$unit"
            units_changed=1
            change "installed $UNITDIR/$unit"
        fi
    done
}

start_units() {
    if ! systemd_running; then
        log "systemd is not running here${PREFIX:+ (staging root $PREFIX)}: units installed, not started;" \
            "on the host: systemctl daemon-reload && systemctl enable --now ${UNITS[*]}"
        return
    fi
    [[ $units_changed -eq 1 ]] && systemctl daemon-reload
    local unit
    for unit in "${UNITS[@]}"; do
        if [[ $config_ok -eq 0 && "$unit" != "$SFU_UNIT" ]]; then
            hold_unit "$unit"
            continue
        fi
        if ! systemctl is-enabled --quiet "$unit" || ! systemctl is-active --quiet "$unit"; then
            systemctl enable --now "$unit"
            change "enabled and started $unit"
        elif [[ $changed -eq 1 ]]; then
            systemctl restart "$unit"
            log "restarted $unit (new code or unit)"
        fi
    done
}

# The config failed its check: a (re)start would run ExecStartPre's --check, fail, and take
# down an agent that records on its last good config.  It keeps running (old code, if this
# was an upgrade) and the operator is told what to run once the file is fixed.
hold_unit() {
    local unit="$1"
    if ! systemctl is-enabled --quiet "$unit"; then
        systemctl enable "$unit"
        change "enabled $unit"
    fi
    if systemctl is-active --quiet "$unit"; then
        [[ $changed -eq 1 ]] && log "did not restart $unit: $ETC/streams.yaml has errors (above); it keeps" \
            "running its old code on its last good config; fix the file, then: systemctl restart $unit"
    else
        log "did not start $unit: $ETC/streams.yaml has errors (above); fix the file, then: systemctl start $unit"
    fi
    return 0
}

host_uninstall() {
    [[ $EUID -eq 0 ]] || die "uninstalling needs root: sudo ./install.sh --uninstall"
    UNITS+=("$SFU_UNIT")  # installed by --with-sfu; removing an absent unit is harmless
    if systemd_running; then
        systemctl disable --now "${UNITS[@]}" 2>/dev/null || true
    fi
    local unit cmd
    for unit in "${UNITS[@]}"; do rm -f "$PREFIX$UNITDIR/$unit"; done
    systemd_running && systemctl daemon-reload
    for cmd in "${COMMANDS[@]}"; do rm -f "$PREFIX$BINDIR/$cmd"; done
    # PREFIX is empty on a real host: guard the path itself, never the prefix.
    local opt="$PREFIX$OPT"
    [[ "$opt" == */opt/vas ]] || die "refusing to remove $opt: not an /opt/vas"
    rm -rf -- "$opt"
    log "removed the units, the commands and $OPT; kept $ETC (config, tokens) and $STATE (recordings)"
}
