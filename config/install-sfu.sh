# Sourced by install.sh: the reference SFU (sfu/server.js) on real mediasoup,
# for --with-sfu (a host install) and --demo --with-sfu.
# shellcheck shell=bash

SFU_PACKAGES=(make g++ python3 curl)
SFU_UNIT=vas-sfu.service

# Node.js and npm: Debian's, unless a node is already there (e.g. NodeSource's).
ensure_node() {
    if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
        log "node: $(node --version) present"
        return
    fi
    apt_install nodejs npm
}

# mediasoup 3.8.4 built once per machine (cached in /var/cache/vas); prints its node_modules.
mediasoup_384_modules() {
    local cache
    cache="$(sfu/build-mediasoup.sh)" || die "building mediasoup 3.8.4 failed (see above)"
    echo "$cache/node_modules"
}

# DEST/node_modules with mediasoup: the registry's current 3.x when its prebuilt
# worker can be fetched (from GitHub), else the 3.8.4 build (no download but npm).
sfu_modules() {
    local dest="$1" worker=node_modules/mediasoup/worker/out/Release/mediasoup-worker
    if [[ -x "$dest/$worker" ]]; then
        log "reference SFU: mediasoup $(cd "$dest" && node -p 'require("mediasoup").version') in place"
        return
    fi
    if curl -fsS -m 10 -o /dev/null https://github.com 2>/dev/null \
        && (cd "$dest" && MEDIASOUP_FORCE_WORKER_PREBUILT_DOWNLOAD=true timeout 900 \
            npm install --omit=dev --no-audit --no-fund --loglevel=error >&2) \
        && [[ -x "$dest/$worker" ]]; then
        change "reference SFU: installed mediasoup $(cd "$dest" && node -p 'require("mediasoup").version') (prebuilt worker)"
        return
    fi
    log "reference SFU: no prebuilt mediasoup worker reachable; using mediasoup 3.8.4 built here"
    rm -rf "$dest/node_modules"
    cp -a "$(mediasoup_384_modules)" "$dest/node_modules"
    change "reference SFU: installed mediasoup 3.8.4 (built here) into $dest/node_modules"
}

# --with-sfu on a host: the app in /opt/vas/sfu and the vas-sfu unit beside the agent's.
host_install_sfu() {
    apt_install "${SFU_PACKAGES[@]}"
    ensure_node
    local dest="$PREFIX$OPT/sfu"
    install -d -m 0755 "$dest"
    if ! cmp -s sfu/server.js "$dest/server.js" || ! cmp -s sfu/package.json "$dest/package.json"; then
        install -m 0644 sfu/server.js sfu/package.json "$dest/"
        change "reference SFU: installed $OPT/sfu/server.js"
    fi
    sfu_modules "$dest"
    UNITS+=("$SFU_UNIT")
    cat <<EOT
==> the reference SFU runs as $SFU_UNIT on 127.0.0.1:3000; point the agent at it in $ETC/streams.yaml:
      mediasoup: {api_url: http://127.0.0.1:3000}
    or let the agent run and supervise it instead (then: systemctl disable --now $SFU_UNIT):
      mediasoup: {command: [/usr/bin/node, $OPT/sfu/server.js, --port, "3000"], api_url: http://127.0.0.1:3000}
EOT
}

# --demo --with-sfu: mediasoup 3.8.4 from the cache, for config/demo-sfu.yaml.
demo_sfu_env() {
    apt_install "${SFU_PACKAGES[@]}"
    ensure_node
    VAS_MEDIASOUP_MODULES="$(mediasoup_384_modules)"
    export VAS_MEDIASOUP_MODULES
}
