#!/usr/bin/env bash
# Install the VAS node agent on a Debian 12 host, or set up a checkout to develop, test or demo it.
#
#   ./install.sh                        install on this host (as root): user vas, /opt/vas, /etc/vas,
#                                       /var/lib/vas/recordings, systemd units (started when systemd runs)
#   ./install.sh --root DIR             test fixture: the same steps into DIR (no units started)
#   ./install.sh --uninstall            remove the units and /opt/vas; keep /etc/vas and the recordings
#   ./install.sh --dev                  system packages + .venv with test and bench extras
#   ./install.sh --dev --test [ARGS]    the same, then the whole test suite (what CI runs)
#   ./install.sh --demo                 runtime packages + .venv, then run the agent on config/demo.yaml
#   ./install.sh --wheelhouse DIR       on a connected machine: wheels of the runtime's Python packages into DIR
#   ./install.sh --wheelhouse DIR --dev the same with the test and bench extras (for --offline DIR --dev)
#   ./install.sh --offline DIR ...      any mode above, installing Python packages only from DIR
#
# Every pip install is pinned by constraints.txt (renew: config/update-constraints.sh).
#
# Idempotent: packages are installed only when missing, the venv only when it is
# missing or pyproject.toml changed since the last install.
set -euo pipefail

cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")"

DEV_PACKAGES=(
    ffmpeg python3 python3-venv
    # The real RTSP camera the integration tests run (tests/camera/rtsp_camera.py).
    python3-gi gir1.2-gst-rtsp-server-1.0
    gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly
    gstreamer1.0-plugins-bad gstreamer1.0-tools
    # A real Prometheus (and promtool) the exporter tests scrape with and check against.
    prometheus
    # systemd-analyze checks the units; prlimit/setpriv (util-linux) run the agent as systemd would.
    systemd util-linux
    # bench/exporter.py drives the exporter with wrk; bench/readyz_cpu.py --instructions counts
    # with valgrind; shellcheck checks the shell scripts.
    wrk valgrind shellcheck
    # Fault tests: wall-clock jumps (faketime), exporter TLS certificates (openssl),
    # and cutting an agent off from etcd (iptables).
    faketime openssl iptables
    # The fleet tests run a real etcd (one member and a three-member cluster).
    etcd-server etcd-client
    # sfu/build-mediasoup.sh builds mediasoup 3.8.4's worker for the reference SFU the tests run.
    make g++
    # The console's browser tests (tests/console/): headless Chromium driven through its chromedriver.
    chromium chromium-driver
)
RUNTIME_PACKAGES=(ffmpeg python3 python3-venv util-linux)
VENV=.venv
STAMP="$VENV/.vas-install"
DEMO_CONFIG=config/demo.yaml

usage() {
    cat <<'EOF'
Usage: ./install.sh [--root DIR]
       ./install.sh --uninstall [--root DIR]
       ./install.sh --dev [--test [PYTEST ARGS...]]
       ./install.sh --demo [--with-sfu]
       ./install.sh [--root DIR] --with-sfu
       ./install.sh --wheelhouse DIR
       ./install.sh --offline DIR [any of the above]
       ./install.sh -h | --help

  (none)    install on this host, as root: FFmpeg if missing, the system user
            and group vas, a venv in /opt/vas with this checkout's code, the
            commands in /usr/local/bin, /etc/vas/streams.yaml (a starter file,
            only when absent: yours is never overwritten, only checked),
            /etc/vas/tokens (0640 root:vas, a first admin token printed once),
            /var/lib/vas/recordings, the systemd units, then daemon-reload and
            enable --now when systemd runs.  Run it again: it changes only what
            differs and says so; a newer checkout upgrades the code and keeps
            config, tokens and recordings.
  --root D  a test fixture, not a way to build an image: the same steps with
            every path under D (units installed, nothing started), but the
            user and group vas are created on THIS host, the command links
            point at /opt/vas and the venv's scripts at D/opt/vas; do not copy
            D onto another machine (run ./install.sh there instead)
  --uninstall
            remove the units, the commands and /opt/vas; keep /etc/vas and
            /var/lib/vas
  --with-sfu
            also install the reference SFU (sfu/server.js, docs/sfu.md) into
            /opt/vas/sfu with mediasoup (the registry's current 3.x when its
            prebuilt worker can be downloaded, else 3.8.4 built here, ~5 min
            once) and its unit vas-sfu.service; with --demo: run the demo with
            the SFU (config/demo-sfu.yaml, 2 cameras live in mediasoup)

  --dev     install the system packages (FFmpeg, GStreamer RTSP server for the
            test camera, Chromium for the console's browser tests) and create .venv with the agent plus its test and
            bench extras (pip install -e '.[test,bench]')
  --test    after --dev, run the test suite (.venv/bin/python -m pytest -q);
            every argument after --test goes to pytest; exits with pytest's code
  --demo    install the runtime only, then run vas-agent in the foreground on
            config/demo.yaml (3 synthetic cameras + 1 offline one); Ctrl-C stops it.
            Fails at once when the demo's exporter port (8080) is taken.

  --wheelhouse D
            on a connected machine (same Debian release and architecture as
            the target): build wheels of every Python package a host install
            and --demo need, pinned by constraints.txt, into D; with --dev,
            those the tests and bench need too (for --offline D --dev)
  --offline D
            for air-gapped hosts: install Python packages only from the
            wheelhouse D (pip --no-index --find-links D); combine with any mode.
            System packages (FFmpeg, python3-venv) must come from your own
            Debian mirror or media

Python packages are pinned by constraints.txt in every mode; renew the pins
with config/update-constraints.sh (docs/operations.md, Reproducible installs).

Works as root or through sudo.  Safe to run again: it installs only what is missing.
EOF
}

log() { printf '==> %s\n' "$*"; }
die() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [[ $EUID -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root to run: $* (run as root or install sudo)"
    fi
}

package_installed() {
    [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]
}

apt_install() {
    local missing=() pkg
    for pkg in "$@"; do
        package_installed "$pkg" || missing+=("$pkg")
    done
    if [[ ${#missing[@]} -eq 0 ]]; then
        log "system packages: all present"
        return
    fi
    command -v apt-get >/dev/null 2>&1 || die "missing packages (${missing[*]}) and no apt-get: this script targets Debian 12"
    log "installing system packages: ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# The interpreter for a new venv: Debian's own python3 when it is new enough.
pick_python() {
    local py
    for py in /usr/bin/python3 python3; do
        if command -v "$py" >/dev/null 2>&1 \
            && "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$py"
            return
        fi
    done
    die "no python3 >= 3.11 found (Debian 12 ships 3.11)"
}

CONSTRAINTS="$PWD/constraints.txt"
PIP_SOURCE=()  # --offline DIR: --no-index --find-links DIR

# pip install into the venv of PYTHON, pinned by constraints.txt (and from the wheelhouse with --offline).
pip_install() {
    local python="$1"
    shift
    "$python" -m pip install -q --disable-pip-version-check -c "$CONSTRAINTS" "${PIP_SOURCE[@]}" "$@"
}

# pip wheel with the venv of PYTHON, as pip_install installs (constraints, --offline's wheelhouse).
pip_wheel() {
    local python="$1"
    shift
    "$python" -m pip wheel -q --disable-pip-version-check -c "$CONSTRAINTS" "${PIP_SOURCE[@]}" "$@"
}

# --wheelhouse DIR [--dev]: the wheels --offline DIR needs with no index at all: a host install's
# and --demo's (the viewer extra); with --dev, the tests' and bench's too.
build_wheelhouse() {
    local dir="$1" dev="$2" work extras="viewer" modes="a host install or --demo"
    [[ $dev -eq 1 ]] && extras="viewer,test,bench" modes="a host install, --demo or --dev"
    mkdir -p "$dir"
    work="$(mktemp -d)"
    "$(pick_python)" -m venv "$work/venv"
    log "building wheels for $modes into $dir (pinned by constraints.txt)"
    pip_wheel "$work/venv/bin/python" -w "$dir" ".[$extras]" "setuptools>=68" wheel
    rm -rf "$work" "$dir"/vas_node_agent-*.whl  # the agent itself is always built from the checkout
    log "done: $(find "$dir" -name '*.whl' | wc -l) wheels in $dir for $modes; on the air-gapped host:" \
        "./install.sh --offline $dir"
}

# Extras already installed, per the stamp; fails when the stamp is stale.
stamp_extras() {
    [[ -f "$STAMP" ]] || return 1
    local hash extras
    { read -r hash; read -r extras || true; } <"$STAMP"
    [[ "$hash" == "$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)" ]] || return 1
    echo "$extras"
}

setup_venv() {
    local extras="$1"  # comma separated, may be empty
    if [[ -x "$VENV/bin/python" ]] && ! "$VENV/bin/python" -c '' 2>/dev/null; then
        log "$VENV is broken (its interpreter does not run): recreating it"
        rm -rf "$VENV"
    fi
    if [[ ! -x "$VENV/bin/python" ]]; then
        local py
        py="$(pick_python)"
        log "creating $VENV with $py ($("$py" --version 2>&1))"
        "$py" -m venv "$VENV"
        rm -f "$STAMP"
    fi
    # Skip pip when this checkout is already installed with (at least) these extras.
    local have want ok=1
    if have="$(stamp_extras)" && [[ -x "$VENV/bin/vas-agent" ]] \
        && "$VENV/bin/python" -c 'import sys, agent; sys.exit(not agent.__file__.startswith(sys.argv[1]))' \
            "$PWD/" 2>/dev/null; then
        for want in ${extras//,/ }; do
            [[ ",$have," == *",$want,"* ]] || ok=0
        done
    else
        ok=0
    fi
    if [[ $ok -eq 1 ]]; then
        log "$VENV: up to date"
        return
    fi
    local spec="."
    [[ -n "$extras" ]] && spec=".[$extras]"
    log "installing the agent into $VENV: pip install -e '$spec'"
    if ! pip_install "$VENV/bin/python" -e "$spec"; then
        [[ ${#PIP_SOURCE[@]} -gt 0 && "$mode" == dev ]] \
            && die "pip found no wheel of a test or bench package in ${PIP_SOURCE[2]}:" \
                "build the wheelhouse with ./install.sh --wheelhouse DIR --dev"
        die "pip install -e '$spec' failed (its error is above)"
    fi
    printf '%s\n%s\n' "$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)" "$extras" >"$STAMP"
}

# A port the demo listens on, free now?  Says who holds it (when ss can tell) and what to do.
#   demo_port_free HOST PORT WHO KEY: WHO (the exporter, the SFU) listens there; KEY in the config moves it.
demo_port_free() {
    local host="$1" port="$2" who="$3" key="$4" holder
    [[ -n "$port" ]] || return 0  # no plain host:port in the file: the program itself will say
    if python3 - "$host" "$port" <<'PY'
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the exporter and node bind: TIME_WAIT is no conflict
try:
    s.bind((sys.argv[1], int(sys.argv[2])))
except OSError:
    sys.exit(1)
PY
    then
        return 0
    fi
    holder="$(ss -Hltnp "sport = :$port" 2>/dev/null | grep -o 'users:(([^)]*))' | head -1)"
    printf 'install.sh: the demo cannot start: port %s on %s is already in use%s.\n' "$port" "$host" \
        "${holder:+ ($holder)}" >&2
    printf '  Its %s must listen there, or curl localhost:%s would reach the other program.\n' "$who" "$port" >&2
    printf '  Stop that program, or change %s in %s and run again.\n' "$key" "$DEMO_CONFIG" >&2
    return 1
}

# The demo's exporter is listening (its port is held and it still runs), or it exited: say so.
demo_exporter_up() {
    local pid="$1" _
    for _ in $(seq 100); do
        if ! kill -0 "$pid" 2>/dev/null; then
            wait "$pid" 2>/dev/null || true
            printf 'install.sh: the demo exporter exited (its error is above); nothing else was started\n' >&2
            return 1
        fi
        demo_port_free "$DEMO_HOST" "$DEMO_PORT" exporter exporter.listen 2>/dev/null || return 0
        sleep 0.1
    done
    printf 'install.sh: the demo exporter did not listen on %s:%s within 10 s\n' "$DEMO_HOST" "$DEMO_PORT" >&2
    return 1
}

# shellcheck source=config/install-sfu.sh
source "$PWD/config/install-sfu.sh"

# One mode per run, whatever the order of the flags (--wheelhouse D --demo ran the demo, and
# --demo --wheelhouse D built wheels).  --dev with --wheelhouse is the wheelhouse's option.
set_mode() {
    if [[ -n "$mode" && "$mode" != "$1" && "$mode$1" != devwheelhouse ]]; then
        [[ "$mode" == wheelhouse || "$1" == wheelhouse ]] \
            && die "--wheelhouse only builds wheels (for a host install and --demo; add --dev for the" \
                "tests); then install with ./install.sh --offline DIR ... on the target"
        die "--$mode and --$1 are exclusive"
    fi
    mode="$1"
}

mode=""
with_sfu=0
dev=0
test_after=0
pytest_args=()
PREFIX=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --root) [[ $# -ge 2 ]] || die "--root needs a directory"; PREFIX="$(realpath -m "$2")"; shift 2 ;;
        --wheelhouse) [[ $# -ge 2 ]] || die "--wheelhouse needs a directory"; set_mode wheelhouse
            wheelhouse="$(realpath -m "$2")"; shift 2 ;;
        --offline) [[ $# -ge 2 ]] || die "--offline needs the wheelhouse directory"
            [[ -d "$2" ]] || die "--offline $2: no such directory (build it with ./install.sh --wheelhouse DIR)"
            PIP_SOURCE=(--no-index --find-links "$(realpath "$2")"); shift 2 ;;
        --uninstall) set_mode uninstall; shift ;;
        --with-sfu) with_sfu=1; shift ;;
        --dev) dev=1; [[ "$mode" == wheelhouse ]] || set_mode dev; shift ;;
        --demo) set_mode demo; shift ;;
        --test) test_after=1; shift; pytest_args=("$@"); break ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done
if [[ $test_after -eq 1 ]]; then
    [[ "$mode" == demo ]] && die "--test goes with --dev, not --demo"
    [[ "$mode" == wheelhouse ]] && die "--test goes with --dev, not --wheelhouse"
    mode=dev
fi
[[ -n "$mode" ]] || mode=host
if [[ "$mode" == wheelhouse ]]; then
    [[ ${#PIP_SOURCE[@]} -eq 0 ]] || die "--wheelhouse builds a wheelhouse; --offline installs from one"
    build_wheelhouse "$wheelhouse" "$dev"
    exit 0
fi
[[ $with_sfu -eq 1 && "$mode" != host && "$mode" != demo ]] && die "--with-sfu goes with a host install or --demo"
if [[ "$mode" == host || "$mode" == uninstall ]]; then
    # shellcheck source=config/install-host.sh
    source "$PWD/config/install-host.sh"
    if [[ "$mode" == host ]]; then host_install "$with_sfu"; else host_uninstall; fi
    exit 0
fi

if [[ "$mode" == dev ]]; then
    apt_install "${DEV_PACKAGES[@]}"
    ensure_node
    # Real mediasoup for the SFU tests: built once per machine, cached outside the checkout.
    sfu/build-mediasoup.sh >/dev/null
    setup_venv "test,bench"
    if [[ $test_after -eq 1 ]]; then
        log "running the tests: $VENV/bin/python -m pytest -q ${pytest_args[*]}"
        exec "$VENV/bin/python" -m pytest -q "${pytest_args[@]}"
    fi
    log "done; run the tests with: $VENV/bin/python -m pytest -q   (or ./install.sh --dev --test)"
    exit 0
fi

# --demo
[[ $with_sfu -eq 1 ]] && DEMO_CONFIG=config/demo-sfu.yaml
DEMO_LISTEN="$(sed -n 's/^  listen: *\([0-9.]*\):\([0-9]*\).*/\1 \2/p' "$DEMO_CONFIG")"
read -r DEMO_HOST DEMO_PORT <<<"$DEMO_LISTEN"
# The SFU's port too (--with-sfu): taken, the SFU would crash-loop while the agent's probes and the
# printed curl reached the other program.  Before anything is installed or started: the reason, at once.
read -r SFU_HOST SFU_PORT <<<"$(sed -n 's|^  api_url: *http://\([0-9.]*\):\([0-9]*\).*|\1 \2|p' "$DEMO_CONFIG")"
demo_port_free "$DEMO_HOST" "$DEMO_PORT" exporter exporter.listen || exit 1
if [[ $with_sfu -eq 1 ]]; then
    demo_port_free "$SFU_HOST" "$SFU_PORT" SFU "mediasoup.api_url and the --port in mediasoup.command" || exit 1
fi
apt_install "${RUNTIME_PACKAGES[@]}"
if [[ $with_sfu -eq 1 ]]; then
    setup_venv "viewer"  # the WebRTC viewer command printed below
    demo_sfu_env
    DEMO_DIR=.demo-sfu
    DEMO_CAMERAS="2 synthetic FFmpeg test sources, recorded and live in the reference SFU (real mediasoup)"
else
    setup_venv ""
    DEMO_DIR=.demo
    DEMO_CAMERAS="3 synthetic FFmpeg test sources (live) + 1 offline RTSP camera (error, retried with backoff)"
fi
"$VENV/bin/vas-agent" --config "$DEMO_CONFIG" --check
"$VENV/bin/vas-exporter" --config "$DEMO_CONFIG" --check
"$VENV/bin/vas-exporter" --config "$DEMO_CONFIG" &
exporter_pid=$!
trap 'kill "$exporter_pid" 2>/dev/null; wait "$exporter_pid" 2>/dev/null' EXIT
demo_exporter_up "$exporter_pid" || exit 1
cat <<EOF

The demo agent runs in the foreground now, its exporter beside it; Ctrl-C stops both
(and every FFmpeg the agent started).
  cameras:     $DEMO_CAMERAS
  recordings:  $PWD/$DEMO_DIR/recordings/<stream id>/*.ts  (HLS playlist: index.m3u8)
  status:      $VENV/bin/vasctl --config $DEMO_CONFIG status      (from another terminal, in $PWD)
  health:      curl localhost:$DEMO_PORT/readyz        (503 naming the failing checks when not ready)
  metrics:     curl localhost:$DEMO_PORT/v2/metrics
  API:         curl localhost:$DEMO_PORT/v2/health/system      (all routes: docs/api.md)
  snapshot:    $PWD/$DEMO_DIR/run/state.json
  reload:      edit $DEMO_CONFIG, then: $VENV/bin/vasctl --config $DEMO_CONFIG reload

EOF
if [[ $with_sfu -eq 1 ]]; then
    cat <<EOF
The reference SFU (sfu/server.js on mediasoup 3.8.4), run by the agent on $SFU_HOST:$SFU_PORT:
  producers:   curl localhost:$SFU_PORT/producers        (mediasoup's own packet counts per camera)
  watch one:   $VENV/bin/python -m tests.sfu.viewer --stream testsrc --save testsrc.ppm
               (a WebRTC viewer: prints frames decoded, size and fps; saves the last frame)

EOF
fi
"$VENV/bin/vas-agent" --config "$DEMO_CONFIG"
