"""The worker's JSON-lines channel, on real OS pipes."""

from __future__ import annotations

import os
import threading

from daemon.engine.channel import EOF_EVENT, Channel


def _pipe_pair() -> tuple[Channel, Channel]:
    a_read, b_write = os.pipe()
    b_read, a_write = os.pipe()
    left = Channel(os.fdopen(a_read, "rb"), os.fdopen(a_write, "wb"))
    right = Channel(os.fdopen(b_read, "rb"), os.fdopen(b_write, "wb"))
    return left, right


def test_messages_round_trip_including_large_and_unicode():
    left, right = _pipe_pair()
    right.start_reader("test-right")
    big = "x" * (6 * 2**20)  # a screenshot's data URL is megabytes
    sender = threading.Thread(
        target=lambda: [
            left.send({"op": "a", "text": "夕焼け\n改行\u2028"}),
            left.send({"op": "b", "blob": big}),
        ]
    )
    sender.start()
    first = right.inbox.get(timeout=10)
    second = right.inbox.get(timeout=10)
    sender.join()
    assert first == {"op": "a", "text": "夕焼け\n改行\u2028"}
    assert second["blob"] == big
    left.close()
    assert right.inbox.get(timeout=10) == EOF_EVENT
    right.close()


def test_garbage_lines_are_skipped_not_fatal():
    read_fd, write_fd = os.pipe()
    channel = Channel(os.fdopen(read_fd, "rb"), open(os.devnull, "wb"))  # noqa: SIM115
    channel.start_reader("test-garbage")
    with os.fdopen(write_fd, "wb") as raw:
        raw.write(b'not json\n[1, 2]\n\n{"ev": "ok"}\n')
    assert channel.inbox.get(timeout=10) == {"ev": "ok"}
    assert channel.inbox.get(timeout=10) == EOF_EVENT
    channel.close()
