"""The app's compute gate (app/panels/gate.py `Gate`): `slots` computations at once, the rest served
first come first served, each told how many requests are ahead of it whenever that changes, and a
request that leaves while waiting (its page was left) taken out of the line. Real threads."""

from __future__ import annotations

import threading
import time

import pytest


@pytest.fixture()
def Gate(common):  # noqa: N802 (the class under test)
    from panels.gate import Gate

    return Gate


def test_requests_wait_in_order_and_are_told_their_place(Gate):  # noqa: N803
    gate = Gate(1)
    told: dict[str, list[int]] = {"b": [], "c": []}
    order: list[str] = []
    release = threading.Event()

    def first() -> None:
        with gate.slot():
            order.append("a")
            release.wait(10)

    def later(name: str) -> None:
        with gate.slot(told[name].append):
            order.append(name)
            time.sleep(0.05)

    a = threading.Thread(target=first)
    a.start()
    while not order:
        time.sleep(0.01)
    b = threading.Thread(target=later, args=("b",))
    b.start()
    while not told["b"]:
        time.sleep(0.01)
    c = threading.Thread(target=later, args=("c",))
    c.start()
    while not told["c"]:
        time.sleep(0.01)
    release.set()
    for t in (a, b, c):
        t.join(10)
    assert order == ["a", "b", "c"]
    assert told == {"b": [1, -1], "c": [2, 1, -1]}  # one ahead (a); two (a, b), then one (b); then served
    assert gate.running == 0 and gate.line == []


def test_two_slots_serve_two_at_once_and_a_request_that_leaves_frees_its_place(Gate):  # noqa: N803
    gate = Gate(2)
    inside = threading.Barrier(3, timeout=10)

    def hold() -> None:
        with gate.slot():
            inside.wait()  # both are inside at once
            inside.wait()

    holders = [threading.Thread(target=hold) for _ in range(2)]
    for t in holders:
        t.start()
    inside.wait()
    told: list[int] = []

    class Left(Exception):
        pass

    def leave(ahead: int) -> None:
        told.append(ahead)
        raise Left  # Streamlit stops a script this way when its page is left

    with pytest.raises(Left), gate.slot(leave):
        pass
    assert told == [1] and gate.line == []  # one ahead (the slots are full); out of the line after
    inside.wait()
    for t in holders:
        t.join(10)
    assert gate.running == 0
    with gate.slot(told.append):  # free again: no wait, nothing said
        pass
    assert told == [1]
