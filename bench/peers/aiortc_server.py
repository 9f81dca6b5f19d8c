"""make bench-peers: an aiortc peer serving ferrocam's stamped test pattern.

Answers a receive-only offer (POST /offer, JSON {sdp, type}, as aiortc's own server example
does) with a video track of 1280x720 @ 30 fps I420 frames: SMPTE-style colour bars with
ferrocam's glass-to-glass stamp (protocol/src/stamp.rs) painted into the top-left corner, the
stamp being time.time() when the frame is made. aiortc encodes each viewer's track with its own
libx264 encoder (aiortc's settings: tune=zerolatency, baseline, level 3.1), held at --bitrate.
ICE on loopback only, no STUN.

Run by tests/src/bin/bench-peers.rs from the venv it makes (target/bench/venv).
"""

import argparse
import asyncio
import fractions
import json
import logging
import time
import uuid

import aioice.ice
import av
import numpy as np
from aiohttp import web
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
import aiortc.codecs.h264 as h264

WIDTH, HEIGHT, FPS = 1280, 720, 30
CLOCK = 90_000

# ---- the stamp (protocol/src/stamp.rs) ----
CELLS = 64
WHITE, BLACK = 235, 16
START = (1, 0, 1, 1)
END = (0, 1, 0, 1)


def cell_size(width):
    return 16 if width >= 1024 else 8 if width >= 512 else 4


def stamp_bits(ms):
    """The 64 cells for capture time `ms`: markers, 48-bit time MSB first, XOR checksum."""
    ms &= 0xFFFF_FFFF_FFFF
    checksum = 0
    for b in ms.to_bytes(6, "big"):
        checksum ^= b
    bits = list(START)
    bits += [(ms >> (47 - i)) & 1 for i in range(48)]
    bits += [(checksum >> (7 - i)) & 1 for i in range(8)]
    bits += list(END)
    return bits


def paint(y, u, v, width, ms):
    """Paints the strip into I420 planes (2-D uint8 arrays), neutral chroma under it."""
    cell = cell_size(width)
    row = np.repeat(
        np.where(np.array(stamp_bits(ms), dtype=bool), WHITE, BLACK).astype(np.uint8), cell
    )
    y[:cell, : CELLS * cell] = row
    u[: cell // 2, : CELLS * cell // 2] = 128
    v[: cell // 2, : CELLS * cell // 2] = 128


def read(y, width):
    """Reads the strip back (self-test)."""
    cell = cell_size(width)
    bits = [int(y[cell // 2, i * cell + cell // 2] > 128) for i in range(CELLS)]
    if tuple(bits[:4]) != START or tuple(bits[60:]) != END:
        return None
    ms = 0
    for b in bits[4:52]:
        ms = (ms << 1) | b
    checksum = 0
    for b in bits[52:60]:
        checksum = (checksum << 1) | b
    expected = 0
    for b in ms.to_bytes(6, "big"):
        expected ^= b
    return ms if checksum == expected else None


def bars():
    """75 % SMPTE-style colour bars as one yuv420p array (height * 3/2 rows)."""
    # white, yellow, cyan, green, magenta, red, blue (BT.601, limited range)
    ys = [180, 162, 131, 112, 84, 65, 35]
    us = [128, 44, 156, 72, 184, 100, 212]
    vs = [128, 142, 44, 58, 198, 212, 114]
    frame = np.empty((HEIGHT * 3 // 2, WIDTH), dtype=np.uint8)
    y, u, v = planes(frame)
    edges = np.linspace(0, WIDTH, 8).astype(int)
    for i in range(7):
        y[:, edges[i] : edges[i + 1]] = ys[i]
        u[:, edges[i] // 2 : edges[i + 1] // 2] = us[i]
        v[:, edges[i] // 2 : edges[i + 1] // 2] = vs[i]
    return frame


def planes(frame):
    """Views of the Y, U and V planes of a (height * 3/2, width) yuv420p array."""
    y = frame[:HEIGHT]
    chroma = frame[HEIGHT:].reshape(-1)
    quarter = (HEIGHT // 2) * (WIDTH // 2)
    u = chroma[:quarter].reshape(HEIGHT // 2, WIDTH // 2)
    v = chroma[quarter:].reshape(HEIGHT // 2, WIDTH // 2)
    return y, u, v


BARS = bars()

# A running clock in the bottom-right corner, like the device's `timeoverlay` on its test
# pattern: a few digits change every frame, so the encoder has the same kind of motion to code.
SEGMENTS = {  # a, b, c, d, e, f, g
    "0": "1111110", "1": "0110000", "2": "1101101", "3": "1111001", "4": "0110011",
    "5": "1011011", "6": "1011111", "7": "1110000", "8": "1111111", "9": "1111011",
}
DIGIT_W, DIGIT_H, STROKE = 24, 44, 5


def draw_digit(y, x0, y0, ch):
    on = SEGMENTS.get(ch)
    if on is None:  # ':' or '.'
        y[y0 + DIGIT_H - STROKE : y0 + DIGIT_H, x0 + 4 : x0 + 4 + STROKE] = 235
        if ch == ":":
            y[y0 + 12 : y0 + 12 + STROKE, x0 + 4 : x0 + 4 + STROKE] = 235
        return 12
    w, h, t, half = DIGIT_W, DIGIT_H, STROKE, DIGIT_H // 2
    boxes = [
        (0, t, 0, w),  # a
        (0, half, w - t, w),  # b
        (half, h, w - t, w),  # c
        (h - t, h, 0, w),  # d
        (half, h, 0, t),  # e
        (0, half, 0, t),  # f
        (half - t // 2, half + t // 2 + 1, 0, w),  # g
    ]
    for bit, (r0, r1, c0, c1) in zip(on, boxes):
        if bit == "1":
            y[y0 + r0 : y0 + r1, x0 + c0 : x0 + c1] = 235
    return w + 8


def draw_clock(y, u, v, seconds):
    text = "%d:%02d:%02d.%03d" % (
        seconds // 3600, seconds // 60 % 60, seconds % 60, int(seconds * 1000) % 1000
    )
    box_w, box_h = 300, DIGIT_H + 20
    x, top = WIDTH - box_w - 20, HEIGHT - box_h - 20
    y[top : top + box_h, x : x + box_w] = 16
    u[top // 2 : (top + box_h) // 2, x // 2 : (x + box_w) // 2] = 128
    v[top // 2 : (top + box_h) // 2, x // 2 : (x + box_w) // 2] = 128
    cx = x + 10
    for ch in text:
        cx += draw_digit(y, cx, top + 10, ch)


class StampedTrack(MediaStreamTrack):
    """30 fps of stamped bars, paced on the monotonic clock."""

    kind = "video"

    def __init__(self):
        super().__init__()
        self.count = 0
        self.t0 = None

    async def recv(self):
        if self.t0 is None:
            self.t0 = time.monotonic()
        due = self.t0 + self.count / FPS
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        frame = BARS.copy()
        y, u, v = planes(frame)
        draw_clock(y, u, v, self.count / FPS)
        paint(y, u, v, WIDTH, int(time.time() * 1000))
        video = av.VideoFrame.from_ndarray(frame, format="yuv420p")
        video.pts = self.count * (CLOCK // FPS)
        video.time_base = fractions.Fraction(1, CLOCK)
        self.count += 1
        return video


def loopback_only():
    """aioice gathers every interface's address except loopback; here, loopback only."""
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]


class NoMdns:
    async def resolve(self, host):
        return None


def skip_mdns():
    """Chromium hides its host addresses behind mDNS names (`<uuid>.local`). Nothing answers
    mDNS here, so aioice would wait 1 s for each before giving up, and the answer with it. Give
    up at once instead, as Janus and ferrocam do (they ignore such candidates): the browser's
    connectivity checks still arrive and become peer-reflexive candidates."""
    async def no_mdns(subscriber):
        return NoMdns()

    aioice.ice.get_or_create_mdns_protocol = no_mdns


def hold_bitrate(bps):
    """aiortc's H.264 encoder starts at 1 Mbit/s and follows REMB between 0.5 and 3 Mbit/s;
    pin it to `bps` like the device's fixed x264 bitrate."""
    h264.DEFAULT_BITRATE = bps
    h264.MIN_BITRATE = bps
    h264.MAX_BITRATE = bps


peers = {}

CORS = {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Headers": "Content-Type"}


async def offer(request):
    params = json.loads(await request.text())
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pid = uuid.uuid4().hex
    peers[pid] = pc

    @pc.on("connectionstatechange")
    async def on_state():
        if pc.connectionState in ("failed", "closed"):
            peers.pop(pid, None)
            await pc.close()

    await pc.setRemoteDescription(RTCSessionDescription(sdp=params["sdp"], type=params["type"]))
    sender = pc.addTrack(StampedTrack())
    h264_only = [
        c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType == "video/H264"
    ]
    for t in pc.getTransceivers():
        if t.sender is sender:
            t.setCodecPreferences(h264_only)
    answer = await pc.createAnswer()
    await pc.setLocalDescription(answer)
    body = {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type, "id": pid}
    return web.json_response(body, headers=CORS)


async def close(request):
    pc = peers.pop(request.query.get("id", ""), None)
    if pc is not None:
        await pc.close()
    return web.json_response({"closed": pc is not None}, headers=CORS)


async def health(request):
    return web.json_response({"peers": len(peers)}, headers=CORS)


async def options(request):
    return web.Response(headers=CORS)


async def on_shutdown(app):
    await asyncio.gather(*(pc.close() for pc in peers.values()))
    peers.clear()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bitrate-kbps", type=int, default=2000)
    parser.add_argument(
        "--resolve-mdns",
        action="store_true",
        help="let aioice try to resolve the browser's mDNS candidates (1 s each when unanswered)",
    )
    parser.add_argument("--self-test", action="store_true", help="check the stamp and exit")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    frame = BARS.copy()
    y, u, v = planes(frame)
    paint(y, u, v, WIDTH, 1_795_000_000_123)
    assert read(y, WIDTH) == 1_795_000_000_123, "stamp does not read back"
    if args.self_test:
        print("stamp ok")
        return

    loopback_only()
    if not args.resolve_mdns:
        skip_mdns()
    hold_bitrate(args.bitrate_kbps * 1000)
    app = web.Application()
    app.on_shutdown.append(on_shutdown)
    app.router.add_post("/offer", offer)
    app.router.add_post("/close", close)
    app.router.add_get("/health", health)
    app.router.add_route("OPTIONS", "/{tail:.*}", options)
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
