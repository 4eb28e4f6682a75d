"""A real WebRTC viewer of the reference SFU (sfu/server.js): aiortc + pymediasoup.

It does what a browser with mediasoup-client does, against the app's viewer API:
``POST /viewers`` -> load a Device with the router's capabilities -> a receive
transport -> ``POST /viewers/{id}/consume`` with the device's capabilities ->
consume locally (whose DTLS handshake calls ``POST /viewers/{id}/connect``) ->
``POST /consumers/{id}/resume``.  Frames are decoded by aiortc (H.264 through
PyAV/FFmpeg); nothing here is a double.

    async with Viewer(port, "cam1") as viewer:
        await viewer.wait_frames(50, timeout=20)
        viewer.frames[-1]          # Frame(arrived, width, height, pts)
        await viewer.wait_closed(timeout=15)   # the SFU closed the transport

``on_frame`` (optional) sees every decoded ``av.VideoFrame`` with its arrival
time (``time.time()``): the latency bench reads a timestamp out of the pixels.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiortc import codecs as aiortc_codecs
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpparameters import RTCRtcpFeedback, RTCRtpCodecParameters
from h264_profile_level_id import core as h264_profiles
from pymediasoup import AiortcHandler, Device
from pymediasoup.models.transport import DtlsParameters
from pymediasoup.rtp_parameters import RtpCapabilities, RtpParameters

from .real_sfu import call

log = logging.getLogger("vas.tests.viewer")
#: Frames kept for assertions: a bounded window (about a minute at 25 fps).
MAX_FRAMES = 2000
#: Connection states after which the viewer will not receive again.
GONE = ("closed", "failed")
#: H.264 profiles aiortc does not offer (it encodes Baseline) but decodes like the rest, with PyAV:
#: Main, High, High 4:4:4 Predictive (what x264 makes of the test camera's pattern).  Browsers offer
#: Main and High too.  Without them a viewer of a stream announced with its real profile is refused.
DECODABLE_H264 = ("4d001f", "640032", "f4001f")
PREDICTIVE_HIGH_444 = 6  # mediasoup's number for it (h264-profile-level-id in JavaScript)


@dataclass(frozen=True)
class Frame:
    """One decoded frame: when it arrived (wall clock), its size and RTP-derived pts."""

    arrived: float
    width: int
    height: int
    pts: int | None


def decode_every_h264_profile() -> None:
    """Offer DECODABLE_H264 too (aiortc's codec table is process-wide; idempotent)."""
    _teach_pymediasoup_high_444()
    video = aiortc_codecs.CODECS["video"]
    offered = {c.parameters.get("profile-level-id") for c in video if c.mimeType == "video/H264"}
    payload_type = max(c.payloadType or 0 for c in video) + 1
    for profile in DECODABLE_H264:
        if profile not in offered:
            video += _h264_with_rtx(profile, payload_type)
            payload_type += 2


def _h264_with_rtx(profile: str, payload_type: int) -> list[RTCRtpCodecParameters]:
    """One H.264 entry and its RTX, as aiortc writes its own."""
    feedback = [RTCRtcpFeedback(type="nack"), RTCRtcpFeedback(type="nack", parameter="pli"),
                RTCRtcpFeedback(type="goog-remb")]
    parameters: dict[str, str | int | None] = {
        "level-asymmetry-allowed": "1", "packetization-mode": "1", "profile-level-id": profile}
    return [RTCRtpCodecParameters(mimeType="video/H264", clockRate=90000, payloadType=payload_type,
                                  rtcpFeedback=feedback, parameters=parameters),
            RTCRtpCodecParameters(mimeType="video/rtx", clockRate=90000, payloadType=payload_type + 1,
                                  parameters={"apt": payload_type})]


def _teach_pymediasoup_high_444() -> None:
    """pymediasoup's H.264 table (h264-profile-level-id 1.0.0) lacks High 4:4:4 Predictive,
    which mediasoup's own (JavaScript) table has: add its pattern and its string."""
    if any(p.profile_idc == 0xF4 for p in h264_profiles.ProfilePatterns):
        return
    h264_profiles.ProfilePatterns.append(h264_profiles.ProfilePattern(
        0xF4, h264_profiles.BitPattern("00000000"), PREDICTIVE_HIGH_444))
    to_string = h264_profiles.profileLevelIdToString

    def with_444(pli: Any) -> str | None:
        if pli.profile == PREDICTIVE_HIGH_444 and pli.level != h264_profiles.Level1_b:
            return f"f400{pli.level:02x}"
        return to_string(pli)

    h264_profiles.profileLevelIdToString = with_444


class Viewer:
    """One viewer of one stream on the reference SFU at 127.0.0.1:``port``."""

    def __init__(self, port: int, stream_id: str, client_id: str = "viewer",
                 on_frame: Callable[[Any, float], None] | None = None) -> None:
        self.port, self.stream_id, self.client_id, self.on_frame = port, stream_id, client_id, on_frame
        self.frames: list[Frame] = []
        self.decoded = 0
        self.viewer_id = self.consumer_id = ""
        self.codec: dict[str, Any] = {}  # the consumer's codec, as mediasoup chose it for this client
        self.states: list[str] = []  # every transport connection state, in order (for reports)
        self.closed = asyncio.Event()  # the transport closed or failed, or the track ended
        self.closed_at: float | None = None
        self._transport: Any = None
        self._reader: asyncio.Task[None] | None = None

    async def _api(self, method: str, path: str, body: dict | None = None) -> Any:
        try:
            return await asyncio.to_thread(call, self.port, method, path, body)
        except urllib.error.HTTPError as exc:  # say what the SFU said
            raise AssertionError(f"{method} {path}: {exc.code} {exc.read().decode(errors='replace')}") from None

    async def start(self) -> Viewer:
        """Create, connect, consume and resume; frames then flow into ``frames``."""
        decode_every_h264_profile()
        offer = await self._api("POST", "/viewers", {"client_id": self.client_id})
        self.viewer_id = offer["viewer_id"]
        device = Device(handlerFactory=AiortcHandler.createFactory(tracks=[]))
        await device.load(RtpCapabilities.model_validate(offer["routerRtpCapabilities"]))
        transport = device.createRecvTransport(
            id=self.viewer_id, iceParameters=offer["iceParameters"], iceCandidates=offer["iceCandidates"],
            dtlsParameters=offer["dtlsParameters"])
        self._transport = transport

        @transport.on("connect")
        async def on_connect(dtls: DtlsParameters) -> None:
            await self._api("POST", f"/viewers/{self.viewer_id}/connect",
                            {"dtlsParameters": dtls.model_dump(exclude_none=True)})

        @transport.on("connectionstatechange")
        def on_state(state: str) -> None:
            self.states.append(state)
            if state in GONE:
                self._gone(f"transport {state}")

        caps = device.rtpCapabilities.model_dump(exclude_none=True)
        answer = await self._api("POST", f"/viewers/{self.viewer_id}/consume",
                                 {"stream_id": self.stream_id, "rtpCapabilities": caps})
        self.consumer_id, self.codec = answer["consumer_id"], answer["rtpParameters"]["codecs"][0]
        consumer = await transport.consume(
            id=answer["consumer_id"], producerId=answer["producer_id"], kind=answer["kind"],
            rtpParameters=RtpParameters.model_validate(answer["rtpParameters"]))
        self._watch_dtls()
        await self._api("POST", f"/consumers/{self.consumer_id}/resume")
        self._reader = asyncio.create_task(self._read(consumer.track), name=f"viewer-{self.client_id}")
        return self

    def _watch_dtls(self) -> None:
        """Also watch the DTLS transport: mediasoup's close_notify ends it before ICE notices."""
        pc = self._transport.handler.pc

        @pc.on("connectionstatechange")
        def on_pc_state() -> None:
            self.states.append(f"pc:{pc.connectionState}")
            if pc.connectionState in GONE:
                self._gone(f"peer connection {pc.connectionState}")

    def _gone(self, why: str) -> None:
        if not self.closed.is_set():
            self.closed_at = time.monotonic()
            log.info("viewer %s: %s", self.client_id, why)
            self.closed.set()

    async def _read(self, track: Any) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                self._gone("track ended")
                return
            arrived = time.time()
            self.decoded += 1
            if len(self.frames) < MAX_FRAMES:
                self.frames.append(Frame(arrived, frame.width, frame.height, frame.pts))
            if self.on_frame is not None:
                self.on_frame(frame, arrived)

    async def wait_frames(self, count: int, timeout: float) -> list[Frame]:
        """Wait until ``count`` frames were decoded; fail naming what was seen."""
        deadline = time.monotonic() + timeout
        while self.decoded < count:
            if time.monotonic() > deadline or self.closed.is_set():
                raise AssertionError(f"viewer {self.client_id}: {self.decoded} of {count} frames decoded "
                                     f"in {timeout:.0f} s; transport states {self.states}")
            await asyncio.sleep(0.05)
        return self.frames

    async def wait_closed(self, timeout: float) -> float:
        """Wait until the client saw its transport close; returns the monotonic moment it did."""
        try:
            await asyncio.wait_for(self.closed.wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"viewer {self.client_id} saw no close in {timeout:.0f} s; "
                                 f"transport states {self.states}") from None
        assert self.closed_at is not None
        return self.closed_at

    async def close(self) -> None:
        """Close the client side (the SFU closes its end on DTLS close)."""
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._transport is not None:
            await self._transport.close()

    async def __aenter__(self) -> Viewer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def _watch(port: int, stream_id: str, seconds: float, save: str | None) -> int:
    last: list[Any] = []

    def keep(frame: Any, _arrived: float) -> None:
        last[:] = [frame]
    async with Viewer(port, stream_id, client_id="vas-viewer-cli", on_frame=keep) as viewer:
        await viewer.wait_frames(1, timeout=15)
        first = viewer.decoded
        started = time.monotonic()
        await asyncio.sleep(seconds)
        rate = (viewer.decoded - first) / (time.monotonic() - started)
        frame = viewer.frames[-1]
        print(f"{stream_id}: {viewer.decoded} frames decoded over WebRTC, {frame.width}x{frame.height} "
              f"at {rate:.1f} fps, codec {viewer.codec.get('mimeType')} "
              f"{viewer.codec.get('parameters', {}).get('profile-level-id', '')}")
        if save and last:
            rgb = last[-1].reformat(format="rgb24")
            plane, row = rgb.planes[0], rgb.width * 3
            data = bytes(plane)  # rows are line_size apart (padded)
            with open(save, "wb") as out:  # PPM: any image viewer opens it
                out.write(f"P6 {rgb.width} {rgb.height} 255\n".encode())
                out.write(b"".join(data[y * plane.line_size:y * plane.line_size + row] for y in range(rgb.height)))
            print(f"last frame written to {save}")
    return 0


def main() -> int:
    """``python -m tests.sfu.viewer --port 3000 --stream testsrc``: watch a stream over WebRTC."""
    import argparse
    parser = argparse.ArgumentParser(description="Watch a stream of the reference SFU over WebRTC "
                                     "(aiortc), print what was decoded and save the last frame.")
    parser.add_argument("--port", type=int, default=3000, help="the reference SFU's API port (3000)")
    parser.add_argument("--stream", required=True, help="the stream id")
    parser.add_argument("--seconds", type=float, default=5.0, help="how long to watch (5)")
    parser.add_argument("--save", metavar="FILE.ppm", help="write the last decoded frame here")
    args = parser.parse_args()
    return asyncio.run(_watch(args.port, args.stream, args.seconds, args.save))


if __name__ == "__main__":
    raise SystemExit(main())
