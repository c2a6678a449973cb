"""MLLP framing (HL7 v2.5 Appendix C): a message is sent as <VT> payload <FS><CR>. Used by
the listener and by the outbound sender alike."""

from __future__ import annotations

import time
from collections.abc import Iterator

START, END = b"\x0b", b"\x1c\r"


class FrameBuffer:
    """Accumulates received bytes; yields ("frame", payload) for complete frames, ("stray",
    bytes) for bytes outside a frame (no start block), and ("oversize", the first bytes) for a
    frame that grew past ``max_frame`` (nothing more of it is kept)."""

    def __init__(self, max_frame: int) -> None:
        self.max_frame = max_frame
        self.data = bytearray()
        self.started: float | None = None  # when the frame being read began (monotonic)

    def feed(self, chunk: bytes) -> Iterator[tuple[str, bytes]]:
        self.data += chunk
        while self.data:
            start = self.data.find(START)
            if start < 0:
                if len(self.data) > self.max_frame or b"\r" in self.data:
                    stray, self.data = bytes(self.data[:self.max_frame]), bytearray()
                    if stray.strip(b"\r\n\x1c "):
                        yield "stray", stray
                return
            if start > 0:
                stray = bytes(self.data[:start])
                del self.data[:start]
                if stray.strip(b"\r\n\x1c "):
                    yield "stray", stray[:self.max_frame]
            if self.started is None:
                self.started = time.monotonic()
            end = self.data.find(END, 1)
            if end < 0:
                if len(self.data) > self.max_frame + 1:
                    yield "oversize", bytes(self.data[1:self.max_frame + 1])
                    self.data = bytearray()
                    self.started = None
                return
            if end - 1 > self.max_frame:
                yield "oversize", bytes(self.data[1:self.max_frame + 1])
            else:
                yield "frame", bytes(self.data[1:end])
            del self.data[:end + len(END)]
            self.started = None

    def leftover(self) -> bytes:
        return bytes(self.data).lstrip(START)


def frame(payload: bytes) -> bytes:
    return START + payload + END
