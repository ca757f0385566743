"""A real RTSP server on loopback for the capture tests (Debian's GStreamer RTSP server through python3-gi).

Serves an MJPG .avi (re-encoded as baseline JPEG, which RTP/JPEG needs; paced by its timestamps) as RTP/JPEG on
rtsp://127.0.0.1:PORT/cam; every client shares one stream, like a camera. Runs under the system Python
(`/usr/bin/python3`), which has the `gi` bindings:
    /usr/bin/python3 tests/agent/rtsp_server.py --port 8554 --clip /tmp/clip.avi
Prints "ready" once it listens. Needs python3-gi, gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-good.
"""

from __future__ import annotations

import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--clip", required=True, help="an .avi of MJPG frames")
    args = ap.parse_args()
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        f'( filesrc location="{args.clip}" ! avidemux ! jpegdec ! jpegenc quality=90 ! rtpjpegpay name=pay0 pt=26 )'
    )
    factory.set_shared(True)  # one pipeline for every client, like a camera
    server.get_mount_points().add_factory("/cam", factory)
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on 127.0.0.1:{args.port}")
    loop = GLib.MainLoop()
    signal.signal(signal.SIGTERM, lambda *_: loop.quit())
    print("ready", flush=True)
    loop.run()


if __name__ == "__main__":
    main()
