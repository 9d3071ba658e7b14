"""app/realtime/manager.py: the reverse room index agrees with python-socketio's own map."""
from __future__ import annotations

import itertools
import random
from types import SimpleNamespace

from socketio import Manager

from app.realtime.manager import IndexedManager


def _manager(cls):
    ids = itertools.count()
    manager = cls()
    manager.set_server(SimpleNamespace(eio=SimpleNamespace(generate_id=lambda: f"s{next(ids)}"),
                                       packet_class=SimpleNamespace(json=None)))
    return manager


def _plain_rooms(manager, sid, namespace):
    """What the library's scan finds (its get_rooms, without the index)."""
    return sorted(Manager.get_rooms(manager, sid, namespace))


def test_index_matches_the_library_through_random_room_changes():
    rng = random.Random(7)
    ours, theirs = _manager(IndexedManager), _manager(Manager)
    live: list[tuple[str, str]] = []
    for step in range(3000):
        op = rng.random()
        if op < 0.25 or not live:
            namespace = rng.choice(["/feed", "/episodes"])
            eio_sid = f"e{step}"
            a, b = ours.connect(eio_sid, namespace), theirs.connect(eio_sid, namespace)
            assert a == b
            live.append((a, namespace))
        elif op < 0.55:
            sid, namespace = rng.choice(live)
            room = f"episode:{rng.randrange(5)}"
            ours.enter_room(sid, namespace, room)
            theirs.enter_room(sid, namespace, room)
        elif op < 0.75:
            sid, namespace = rng.choice(live)
            room = f"episode:{rng.randrange(5)}"
            ours.leave_room(sid, namespace, room)
            theirs.leave_room(sid, namespace, room)
        elif op < 0.8:
            namespace, room = rng.choice(["/feed", "/episodes"]), f"episode:{rng.randrange(5)}"
            ours.close_room(room, namespace)
            theirs.close_room(room, namespace)
        else:
            sid, namespace = live.pop(rng.randrange(len(live)))
            ours.pre_disconnect(sid, namespace)
            theirs.pre_disconnect(sid, namespace)
            ours.disconnect(sid, namespace)
            theirs.disconnect(sid, namespace)
            assert not ours.is_connected(sid, namespace)
            assert ours.get_rooms(sid, namespace) == []
        assert ours.rooms == theirs.rooms
        assert ours.pending_disconnect == theirs.pending_disconnect
        for sid, namespace in live[-5:]:
            assert sorted(ours.get_rooms(sid, namespace)) == _plain_rooms(theirs, sid, namespace)
    assert set(ours._rooms_of) == {(ns, sid) for sid, ns in live}  # nothing left of gone sockets


def test_disconnect_does_not_scan_every_room():
    """Disconnecting one socket touches its own rooms only, however many sockets there are."""
    manager = _manager(IndexedManager)
    sids = [manager.connect(f"e{i}", "/episodes") for i in range(2000)]
    for sid in sids:
        manager.enter_room(sid, "/episodes", "episode:1")
    calls = []
    original = manager.basic_leave_room
    manager.basic_leave_room = lambda *a: (calls.append(a), original(*a))
    manager.pre_disconnect(sids[0], "/episodes")
    manager.disconnect(sids[0], "/episodes")
    assert sorted(str(room) for _sid, _ns, room in calls) == sorted(["None", sids[0], "episode:1"])
    assert len(manager.rooms["/episodes"]["episode:1"]) == 1999
