"""An RTSP "camera" whose frames carry the wall-clock millisecond they were made.

For glass-to-glass latency (bench/sfu_latency.py).  Must be run by the system
interpreter (GStreamer bindings), like rtsp_camera.py, and speaks the same
protocol to its caller (tests/camera/fixture.py ``RtspCamera``):

    /usr/bin/python3 tests/camera/clock_camera.py --port 8554 --path clock [--fps 25] [--size 320x240]

This process draws each frame (tests/camera/clock_pattern.py), stamps it with the
time it pushes it, and GStreamer encodes it as rtsp_camera.py does (x264
ultrafast/zerolatency, a keyframe a second, 4:2:0).  Prints "READY rtsp://..."
once listening; exits 0 on SIGTERM/SIGINT or when its parent dies, 3 if the port
cannot be bound.
"""
import sys
import time

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from clock_pattern import i420_frame  # noqa: E402 - next to this script
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402
from rtsp_camera import EXIT_BIND_FAILED, parse_args, stop_with  # noqa: E402

PIPELINE = (
    "( appsrc name=clock is-live=true format=time do-timestamp=true"
    " caps=video/x-raw,format=I420,width={w},height={h},framerate={fps}/1"
    " ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} bitrate=300"
    " ! rtph264pay name=pay0 pt=96 config-interval=1 )"
)


def feed(_factory, media, args):
    """Push a frame stamped with the wall clock every 1/fps s while the media lives."""
    src = media.get_element().get_by_name_recurse_up("clock")
    flowing = []  # set once a push went through: a refused push after that means the media is gone

    def push():
        frame = i420_frame(args.width, args.height, int(time.time() * 1000))
        if src.emit("push-buffer", Gst.Buffer.new_wrapped(frame)) == Gst.FlowReturn.OK:
            flowing[:] = [True]
            return True
        return not flowing  # before PLAYING appsrc refuses (flushing): keep trying

    GLib.timeout_add(max(1, round(1000 / args.fps)), push)


def main(argv=None):
    args = parse_args(argv)
    Gst.init(None)
    loop = GLib.MainLoop()
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    for path in args.path:
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(PIPELINE.format(w=args.width, h=args.height, fps=args.fps))
        factory.set_shared(True)
        factory.set_publish_clock_mode(GstRtspServer.RTSPPublishClockMode.CLOCK_AND_OFFSET)
        factory.connect("media-configure", feed, args)
        server.get_mount_points().add_factory("/" + path.strip("/"), factory)
    try:
        server.create_source(None).attach(None)
    except GLib.Error as exc:
        print(f"clock_camera: cannot listen on 127.0.0.1:{args.port}: {exc.message}", file=sys.stderr, flush=True)
        return EXIT_BIND_FAILED

    stop_with(loop)

    def ready():
        print(f"READY rtsp://127.0.0.1:{args.port}", flush=True)
        return GLib.SOURCE_REMOVE

    GLib.idle_add(ready)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
