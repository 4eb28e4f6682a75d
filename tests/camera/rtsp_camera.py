"""A real RTSP "IP camera" for integration tests, built on GStreamer's RTSP server.

Must be run by the system interpreter (the only one that can import the GStreamer
bindings from python3-gi / gir1.2-gst-rtsp-server-1.0):

    /usr/bin/python3 tests/camera/rtsp_camera.py --port 8554 --path cam1 --path cam2 \
        [--fps 25] [--size 320x240] [--profile high] [--background 0xff3060a0] [--user admin --password secret]

Each --path is served as rtsp://127.0.0.1:PORT/<path>: a live H.264 test pattern
(keyframe every second, SPS/PPS repeated every second) from one shared pipeline per
path, so several clients can read the same path (--profile: the H.264 profile x264
encodes, e.g. ``high``; by default x264's own choice for the test pattern; --background: the ball's
background as 0xAARRGGBB, black by default, e.g. a picture that is mostly non-black). Only 127.0.0.1 is bound. With
--user/--password, RTSP basic auth is required. Prints "READY rtsp://127.0.0.1:PORT"
on stdout once listening; exits 0 on SIGTERM/SIGINT (or when its parent dies), and
exit code 3 if the port cannot be bound (e.g. already in use).
"""
import argparse
import os
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

EXIT_BIND_FAILED = 3
PIPELINE = (
    "( videotestsrc is-live=true pattern=ball{background} ! video/x-raw,width={w},height={h},framerate={fps}/1"
    " ! x264enc tune=zerolatency speed-preset={preset} key-int-max={fps} bitrate=300"
    "{profile} ! rtph264pay name=pay0 pt=96 config-interval=1 )"
)


def parse_args(argv):
    p = argparse.ArgumentParser(description="GStreamer RTSP test camera")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", action="append", required=True, help="mount path (repeatable)")
    p.add_argument("--fps", type=int, default=25)
    p.add_argument("--size", default="320x240", help="WIDTHxHEIGHT")
    p.add_argument("--profile", help="H.264 profile x264 must encode (e.g. high, main, baseline)")
    p.add_argument("--background", help="the ball's background colour, 0xAARRGGBB (default black)")
    p.add_argument("--user")
    p.add_argument("--password")
    args = p.parse_args(argv)
    if (args.user is None) != (args.password is None):
        p.error("--user and --password must be given together")
    try:
        args.width, args.height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        p.error(f"bad --size {args.size!r}, expected WIDTHxHEIGHT")
    return args



def stop_with(loop) -> None:
    """Quit ``loop`` on SIGTERM or SIGINT, and when the parent (pytest) is gone (SIGKILLed)."""
    def quit_(*_):
        loop.quit()
        return GLib.SOURCE_REMOVE

    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, sig, quit_)
    parent = os.getppid()
    GLib.timeout_add_seconds(1, lambda: quit_() if os.getppid() != parent else True)


def main(argv=None):
    args = parse_args(argv)
    Gst.init(None)
    loop = GLib.MainLoop()
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))

    if args.user is not None:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, args.user)
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password), token)
        server.set_auth(auth)  # clients without valid credentials get 401

    profile = f" ! video/x-h264,profile={args.profile}" if args.profile else ""
    # ultrafast uses no CABAC and no 8x8 transform, so x264 writes Constrained Baseline whatever the
    # caps ask (they are a ceiling); superfast has both, so the SPS says the profile asked for.
    preset = "superfast" if args.profile else "ultrafast"
    background = f" background-color={int(args.background, 16)}" if args.background else ""
    launch = PIPELINE.format(w=args.width, h=args.height, fps=args.fps, profile=profile, preset=preset,
                             background=background)
    mounts = server.get_mount_points()
    for path in args.path:
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(launch)
        factory.set_shared(True)
        # Makes the media unseekable: otherwise each new client's "PLAY Range: npt=0-"
        # seeks the shared live pipeline and resets timestamps for existing clients.
        factory.set_publish_clock_mode(GstRtspServer.RTSPPublishClockMode.CLOCK_AND_OFFSET)
        if args.user is not None:
            factory.add_role_from_structure(Gst.Structure.new_from_string(
                f"{args.user}, media.factory.access=(boolean)true, "
                "media.factory.construct=(boolean)true"))
        mounts.add_factory("/" + path.strip("/"), factory)

    try:  # same as server.attach(None), but reports why binding failed
        source = server.create_source(None)
    except GLib.Error as exc:
        print(f"rtsp_camera: cannot listen on 127.0.0.1:{args.port}: {exc.message}",
              file=sys.stderr, flush=True)
        return EXIT_BIND_FAILED
    source.attach(None)  # the socket is bound and listening from here on

    stop_with(loop)

    def ready():
        print(f"READY rtsp://127.0.0.1:{args.port}", flush=True)
        return GLib.SOURCE_REMOVE

    GLib.idle_add(ready)
    loop.run()

    # Clean shutdown: drop the listening source and close client connections.
    source.destroy()
    server.client_filter(lambda _srv, _client, *_: GstRtspServer.RTSPFilterResult.REMOVE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
