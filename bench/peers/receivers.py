"""make bench-peers: lightweight receive-only viewers (aiortc, no decoding) for the per-viewer
CPU measurement, so that 8 viewers on a 2-core machine do not cost 8 browser tabs.

One process holds all the viewers. It reads commands on stdin, one per line, and answers each
with one JSON line on stdout:

  viewers N   ensure N viewers are connected and receiving video -> {"viewers": N}
  packets     RTP packets (and payload bytes) received by all viewers so far
              -> {"packets": total, "each": [...], "bytes": total}
  quit        close everything and exit

--peer janus --url http://127.0.0.1:PORT/janus [--mountpoint 1]: Janus REST API, Janus offers.
--peer aiortc --url http://127.0.0.1:PORT: bench/peers/aiortc_server.py, the viewer offers.
"""

import argparse
import asyncio
import itertools
import json
import sys
import time

import aiohttp
import aioice.ice
import aiortc.rtcrtpreceiver as rtcrtpreceiver
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription

txn = itertools.count()


class NoDecoder:
    """Stands in for aiortc's decoder: frames are reassembled (so NACK/PLI behave) but never
    decoded."""

    def decode(self, encoded_frame):
        return []


def patch_aiortc(loopback):
    if loopback:
        # As the aiortc server does: pair 127.0.0.1 with 127.0.0.1.
        aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]
    rtcrtpreceiver.get_decoder = lambda codec: NoDecoder()
    original = RTCRtpReceiver._handle_rtp_packet

    async def counting(self, packet, arrival_time_ms):
        self._bench_packets = getattr(self, "_bench_packets", 0) + 1
        self._bench_bytes = getattr(self, "_bench_bytes", 0) + len(packet.payload)
        await original(self, packet, arrival_time_ms)

    RTCRtpReceiver._handle_rtp_packet = counting


class Viewer:
    def __init__(self):
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.close_remote = None

    def packets(self):
        return sum(getattr(r, "_bench_packets", 0) for r in self.pc.getReceivers())

    def bytes(self):
        return sum(getattr(r, "_bench_bytes", 0) for r in self.pc.getReceivers())

    async def close(self):
        if self.close_remote:
            try:
                await self.close_remote()
            except Exception:
                pass
        await self.pc.close()


async def janus_post(http, url, body):
    body = dict(body, transaction=f"t{next(txn)}")
    async with http.post(url, data=json.dumps(body)) as res:
        reply = json.loads(await res.text())
    if reply.get("janus") == "error":
        raise RuntimeError(f"janus: {reply}")
    return reply


async def connect_janus(http, base, mountpoint):
    viewer = Viewer()
    session = (await janus_post(http, base, {"janus": "create"}))["data"]["id"]
    handle = (
        await janus_post(
            http, f"{base}/{session}", {"janus": "attach", "plugin": "janus.plugin.streaming"}
        )
    )["data"]["id"]
    await janus_post(
        http,
        f"{base}/{session}/{handle}",
        {"janus": "message", "body": {"request": "watch", "id": mountpoint}},
    )
    jsep = None
    while jsep is None:
        async with http.get(f"{base}/{session}?maxev=10&rid={time.time()}") as res:
            events = json.loads(await res.text())
        for ev in events if isinstance(events, list) else [events]:
            if ev.get("jsep", {}).get("type") == "offer":
                jsep = ev["jsep"]
    await viewer.pc.setRemoteDescription(RTCSessionDescription(sdp=jsep["sdp"], type="offer"))
    answer = await viewer.pc.createAnswer()
    await viewer.pc.setLocalDescription(answer)
    await janus_post(
        http,
        f"{base}/{session}/{handle}",
        {
            "janus": "message",
            "body": {"request": "start"},
            "jsep": {"type": "answer", "sdp": viewer.pc.localDescription.sdp},
        },
    )
    await janus_post(
        http, f"{base}/{session}/{handle}", {"janus": "trickle", "candidate": {"completed": True}}
    )

    async def keepalive():
        # The HTTP transport needs a poll or keepalive within the session timeout (60 s).
        while True:
            await asyncio.sleep(20)
            try:
                await janus_post(http, f"{base}/{session}", {"janus": "keepalive"})
            except Exception:
                return

    task = asyncio.ensure_future(keepalive())

    async def close_remote():
        task.cancel()
        await janus_post(http, f"{base}/{session}", {"janus": "destroy"})

    viewer.close_remote = close_remote
    return viewer


async def connect_aiortc(http, base):
    viewer = Viewer()
    viewer.pc.addTransceiver("video", direction="recvonly")
    await viewer.pc.setLocalDescription(await viewer.pc.createOffer())
    body = {"sdp": viewer.pc.localDescription.sdp, "type": viewer.pc.localDescription.type}
    async with http.post(f"{base}/offer", data=json.dumps(body)) as res:
        answer = json.loads(await res.text())
    await viewer.pc.setRemoteDescription(
        RTCSessionDescription(sdp=answer["sdp"], type=answer["type"])
    )

    async def close_remote():
        async with http.post(f"{base}/close?id={answer['id']}") as res:
            await res.read()

    viewer.close_remote = close_remote
    return viewer


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--peer", choices=["janus", "aiortc"], required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--mountpoint", type=int, default=1)
    args = parser.parse_args()
    # Janus offers only this machine's non-loopback addresses (see bench/peers/janus/janus.jcfg).
    patch_aiortc(loopback=args.peer == "aiortc")

    viewers = []
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def reply(obj):
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    async with aiohttp.ClientSession() as http:
        while True:
            line = (await reader.readline()).decode().strip()
            if not line or line == "quit":
                break
            cmd, *rest = line.split()
            try:
                if cmd == "viewers":
                    want = int(rest[0])
                    while len(viewers) < want:
                        if args.peer == "janus":
                            viewer = await connect_janus(http, args.url, args.mountpoint)
                        else:
                            viewer = await connect_aiortc(http, args.url)
                        viewers.append(viewer)
                    deadline = time.monotonic() + 20
                    while any(v.packets() == 0 for v in viewers):
                        if time.monotonic() > deadline:
                            raise RuntimeError("a viewer received no video in 20 s")
                        await asyncio.sleep(0.1)
                    reply({"viewers": len(viewers)})
                elif cmd == "packets":
                    each = [v.packets() for v in viewers]
                    reply({"packets": sum(each), "each": each, "bytes": sum(v.bytes() for v in viewers)})
                else:
                    reply({"error": f"unknown command {cmd}"})
            except Exception as e:  # report, keep serving
                reply({"error": repr(e)})
        await asyncio.gather(*(v.close() for v in viewers), return_exceptions=True)


if __name__ == "__main__":
    asyncio.run(main())
