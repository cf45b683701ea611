"""The chat room (ws4web/demo/handler.py) driven in-process through ws4web.testing, on both doors.

Presence updates run when the test says (an injected ``schedule``), so counting them
needs no clock: N joins in one window are one update, whatever the machine's speed.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import wait_until
from ws4web.demo import page, page_origins
from ws4web.demo.handler import MAX_NAME, MAX_TEXT, SAY_LIMIT, ChatError, ChatHandler, ChatRoom, check_name
from ws4web.exceptions import ConnectionClosed, InvalidStatus
from ws4web.pubsub import Hub, RateLimit
from ws4web.testing import TestConnection, connect

pytestmark = pytest.mark.timeout(120)

DOORS = ["server", "blocking"]


class Manual:
    """A ``schedule`` that runs nothing until the test calls :meth:`run`."""

    def __init__(self) -> None:
        self.due: list[Callable[[], None]] = []

    def __call__(self, delay: float, action: Callable[[], None]) -> object:
        self.due.append(action)
        return action

    def run(self) -> int:
        """Run what is due; the number of actions run."""
        due, self.due = self.due, []
        for action in due:
            action()
        return len(due)


class Chat:
    """A room of its own (a fresh hub) and the connections a test opened to it."""

    def __init__(self, door: str, rate_limit: RateLimit | None, manual: bool = True, **room: Any) -> None:
        self.door = door
        self.hub = Hub(rate_limit=rate_limit)
        self.manual = Manual()
        if manual:
            room["schedule"] = self.manual
        self.room = ChatRoom(self.hub, **room)
        self.handler = type("TestChat", (ChatHandler,), {"room": self.room})
        self.opened: list[TestConnection] = []

    def connect(self, **options: Any) -> TestConnection:
        ws = connect(self.handler, "/ws", door=self.door, **options)
        self.opened.append(ws)
        return ws

    def join(self, name: str) -> tuple[TestConnection, dict[str, Any]]:
        """A new member: its connection, and the welcome it got."""
        ws = self.connect()
        ws.send(json.dumps({"type": "join", "name": name}))
        welcome = event(ws)
        assert welcome["type"] == "welcome", welcome
        return ws, welcome

    def close(self) -> None:
        for ws in self.opened:
            if not ws.closed:
                try:
                    ws.close(timeout=2.0)  # as the client: its door then has nothing to wait for
                except (ConnectionClosed, TimeoutError):
                    pass
            ws.shutdown()
        self.hub.close()


@pytest.fixture(params=DOORS)
def door(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def chat(door: str) -> Iterator[Callable[..., Chat]]:
    made: list[Chat] = []

    def make(rate_limit: RateLimit | None = None, manual: bool = True, **room: Any) -> Chat:
        made.append(Chat(door, rate_limit, manual, **room))
        return made[-1]

    yield make
    for one in made:
        one.close()


def event(ws: TestConnection) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(ws.recv().data)
    return loaded


def say(ws: TestConnection, text: str) -> None:
    ws.send(json.dumps({"type": "say", "text": text}))


def nothing_else(ws: TestConnection) -> None:
    """Nothing is waiting for ``ws``: a bad request's error (a reply in order with
    everything the hub sends it) is the next message."""
    ws.send("not json")
    assert event(ws)["code"] == "bad-request"


def members(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"id": member, "name": name} for member, name in pairs]


# -- join and leave ---------------------------------------------------------------------------


def test_joins_and_leaves_are_told_once_each(chat: Callable[..., Chat]) -> None:
    room = chat()
    ann, hello_ann = room.join("ann")
    a = hello_ann["id"]
    assert hello_ann == {"type": "welcome", "id": a, "name": "ann", "online": members((a, "ann"))}
    bob, hello_bob = room.join("bob")
    b = hello_bob["id"]
    assert a != b and a.startswith("ws") and b.startswith("ws")
    assert hello_bob["online"] == members((b, "bob")), "ann's arrival is not told yet: the update will"

    assert room.manual.run() == 1, "two joins in one window: one update scheduled"
    update = {"type": "presence", "joined": members((a, "ann"), (b, "bob")), "left": []}
    assert event(ann) == update
    assert event(bob) == update

    bob.close()
    assert room.manual.run() == 1
    assert event(ann) == {"type": "presence", "joined": [], "left": members((b, "bob"))}
    nothing_else(ann)


def test_a_join_and_leave_in_one_window_costs_nothing(chat: Callable[..., Chat]) -> None:
    room = chat()
    ann, _ = room.join("ann")
    room.manual.run()
    event(ann)  # ann's own join
    visitor, _ = room.join("visitor")
    visitor.close()
    assert room.manual.run() == 1
    nothing_else(ann)  # no change since the last update: nothing published


def test_a_repeated_join_is_refused_and_publishes_nothing(chat: Callable[..., Chat]) -> None:
    room = chat()
    ann, _ = room.join("ann")
    room.manual.run()
    event(ann)
    published = room.hub.stats().published
    for _ in range(20):
        ann.send(json.dumps({"type": "join", "name": "ann"}))
        refused = event(ann)
        assert refused["code"] == "already-joined" and "as ann" in refused["text"]
    assert room.manual.due == []
    assert room.hub.stats().published == published


def test_a_burst_of_joins_is_one_presence_update(chat: Callable[..., Chat]) -> None:
    """Issue 17: 20 joins used to publish 20 full lists to a growing room (quadratic)."""
    room = chat()
    joined = [room.join(f"member{index}") for index in range(20)]
    # The welcomes (hub.send) are counted once each handler's send() has returned.
    assert wait_until(lambda: room.hub.stats().sent == 20)
    before = room.hub.stats()
    assert before.published == 0, "nothing published before the window ends"
    assert room.manual.run() == 1
    after = room.hub.stats()
    assert (after.published, after.deliveries - before.deliveries) == (1, 20), "one update, one copy per member"
    for ws, _ in joined:
        update = event(ws)
        assert update["type"] == "presence" and len(update["joined"]) == 20
        nothing_else(ws)

    # Half of them leave and five newcomers join within one window: still one update.
    for ws, _ in joined[10:]:
        ws.close()
    newcomers = [room.join(f"new{index}") for index in range(5)]
    assert room.manual.run() == 1
    assert room.hub.stats().published == 2  # (the newcomers said nothing)
    for ws, _ in joined[:10] + newcomers:
        update = event(ws)
        assert (len(update["joined"]), len(update["left"])) == (5, 10)
        nothing_else(ws)


def test_an_update_is_the_changes_not_the_room(chat: Callable[..., Chat]) -> None:
    room = chat()
    crowd = [room.join(f"member{index}") for index in range(30)]
    room.manual.run()
    for ws, _ in crowd:
        event(ws)
    _, hello = room.join("late")
    assert len(hello["online"]) == 31, "a welcome lists the whole room, once"
    room.manual.run()
    update = crowd[0][0].recv().data
    assert json.loads(update) == {"type": "presence", "joined": members((hello["id"], "late")), "left": []}
    assert len(update) < 100


def test_a_welcome_lists_what_the_room_was_told(chat: Callable[..., Chat]) -> None:
    """Every page's list is its welcome's, changed by each update after it: never stale."""
    room = chat()
    ann, hello_ann = room.join("ann")
    room.manual.run()
    event(ann)
    passing, _ = room.join("passing")  # not told yet ...
    bob, hello_bob = room.join("bob")
    assert hello_bob["online"] == members((hello_ann["id"], "ann"), (hello_bob["id"], "bob"))
    passing.close()  # ... and never will be: bob's list never had it
    room.manual.run()
    assert event(bob) == {"type": "presence", "joined": members((hello_bob["id"], "bob")), "left": []}
    nothing_else(bob)


def test_every_page_list_ends_as_the_room(chat: Callable[..., Chat]) -> None:
    """Random joins, leaves and updates: each member's list (its welcome, then every update
    applied in order, as the page does) ends equal to the room."""
    rng = random.Random(1)
    room = chat()
    views: dict[str, tuple[TestConnection, str, dict[str, str]]] = {}  # member id -> (connection, name, its list)
    for step in range(200):
        action = rng.random()
        if action < 0.5 or not views:
            ws, hello = room.join(rng.choice(["ann", "bob", "carol"]))
            views[hello["id"]] = (ws, hello["name"], {m["id"]: m["name"] for m in hello["online"]})
        elif action < 0.8:
            gone = rng.choice(sorted(views))
            views.pop(gone)[0].close()
        else:
            room.manual.run()
        if step % 10 == 0:
            for ws, _, view in views.values():
                read_updates(ws, view)
    room.manual.run()
    truth = {member: name for member, (_, name, _) in views.items()}
    assert len(truth) > 5
    for member, (ws, _, view) in views.items():
        read_updates(ws, view)
        assert view == truth, member


def read_updates(ws: TestConnection, view: dict[str, str]) -> None:
    """Apply every presence update waiting for ``ws`` to ``view``, as the page does."""
    ws.send("probe")
    while (received := event(ws))["type"] != "error":
        for member in received["left"]:
            view.pop(member["id"], None)
        for member in received["joined"]:
            view[member["id"]] = member["name"]


def test_presence_updates_come_by_themselves(chat: Callable[..., Chat]) -> None:
    room = chat(manual=False, debounce=0.01)  # the default schedule: a timer thread
    ann, _ = room.join("ann")
    bob, hello = room.join("bob")
    # If the timer announced ann before bob joined, bob's welcome lists her and no update
    # tells bob of her again; otherwise one update tells him of both.
    welcomed = {member["name"] for member in hello["online"]} - {"bob"}
    for ws, expected in ((ann, ["ann", "bob"]), (bob, sorted({"ann", "bob"} - welcomed))):
        # One or two updates, as the timer fell: together they announce each member once.
        told: list[str] = []
        while len(told) < len(expected):
            update = event(ws)
            assert update["type"] == "presence"
            told += [member["name"] for member in update["joined"]]
        assert sorted(told) == expected
    bob.close()
    update = event(ann)
    assert update["left"] == members((hello["id"], "bob"))


def test_a_speakers_join_is_told_before_its_first_line(chat: Callable[..., Chat]) -> None:
    room = chat()
    ann, _ = room.join("ann")
    room.manual.run()
    event(ann)
    bob, hello = room.join("bob")
    say(bob, "hi")  # within bob's first window
    assert event(ann)["joined"] == members((hello["id"], "bob"))
    assert event(ann) == {"type": "message", "id": hello["id"], "from": "bob", "text": "hi"}
    assert room.manual.run() == 1
    nothing_else(ann)  # the scheduled update found nothing left to tell


# -- names ------------------------------------------------------------------------------------


def test_names_are_made_unique_with_a_suffix(chat: Callable[..., Chat]) -> None:
    room = chat()
    first, hello1 = room.join("ann")
    _, hello2 = room.join("Ann")
    _, hello3 = room.join("ANN")
    assert [hello1["name"], hello2["name"], hello3["name"]] == ["ann", "Ann (2)", "ANN (3)"]
    assert len({hello1["id"], hello2["id"], hello3["id"]}) == 3
    first.close()
    _, again = room.join("ann")
    assert again["name"] == "ann", "a name is free again once its holder left"
    # The suffix cannot be typed: a name with parentheses is refused.
    with pytest.raises(ChatError):
        check_name("ann (2)")


@pytest.mark.parametrize(
    "name",
    [
        "",
        "   ",
        "a" * (MAX_NAME + 1),
        "bob, carol",
        "ann (2)",
        "ann\x00",
        "ann\nbob",
        "ann\tbob",
        "ann\u202ebob",  # right-to-left override
        "a\u200bnn",  # zero-width space
        "<b>ann</b>",
        "ann;",
        "\u0301ann",  # a combining mark with nothing to combine with
        "--",
        42,
        None,
        ["ann"],
    ],
)
def test_invalid_names_are_refused(name: object) -> None:
    with pytest.raises(ChatError) as refused:
        check_name(name)
    assert refused.value.code == "bad-name"


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("ann", "ann"),
        ("  ann   lee ", "ann lee"),
        ("O'Brien", "O'Brien"),
        ("zoë", "zoë"),
        ("zoe\u0308", "zoë"),  # NFKC composes
        ("\uff46\uff55\uff4c\uff4c", "full"),  # full-width forms fold
        ("李小龍", "李小龍"),
        ("अनु", "अनु"),  # a vowel sign (a mark) after a letter
        ("a" * MAX_NAME, "a" * MAX_NAME),
        ("j.r_r-t", "j.r_r-t"),
    ],
)
def test_valid_names_are_normalized(raw: str, shown: str) -> None:
    assert check_name(raw) == shown


def test_a_refused_name_leaves_the_connection_open_to_try_again(chat: Callable[..., Chat]) -> None:
    room = chat()
    ws = room.connect()
    ws.send(json.dumps({"type": "join", "name": "bob, carol"}))
    refused = event(ws)
    assert refused["type"] == "error" and refused["code"] == "bad-name" and "','" in refused["text"]
    ws.send(json.dumps({"type": "join", "name": "bob"}))
    assert event(ws)["name"] == "bob"
    assert room.room.hub.presence("chat")[0].endswith(" bob")


def test_the_room_has_a_size(chat: Callable[..., Chat]) -> None:
    room = chat(max_members=3)
    for name in ("a", "b", "c"):
        room.join(name)
    ws = room.connect()
    ws.send(json.dumps({"type": "join", "name": "d"}))
    assert event(ws)["code"] == "room-full"


# -- lines ------------------------------------------------------------------------------------


def test_lines_carry_the_speakers_id_and_name(chat: Callable[..., Chat]) -> None:
    room = chat()
    ann, hello_ann = room.join("ann")
    twin, hello_twin = room.join("ann")
    room.manual.run()
    for ws in (ann, twin):
        event(ws)
    say(twin, "it's me")
    line = {"type": "message", "id": hello_twin["id"], "from": "ann (2)", "text": "it's me"}
    assert event(ann) == line and event(twin) == line
    assert line["id"] != hello_ann["id"], "a page marks its own lines by id, not by name"


@pytest.mark.parametrize(
    ("sent", "code"),
    [
        ("not json", "bad-request"),
        ("[" * 50_000, "bad-request"),  # deeper than the JSON parser recurses
        ("1" * 10_000, "bad-request"),  # more digits than int() takes
        ('["say"]', "bad-request"),
        ('{"type": "shout"}', "bad-request"),
        ('{"no": "type"}', "bad-request"),
        ('{"type": "say", "text": "hi"}', "not-joined"),
    ],
)
def test_bad_requests_get_an_error_and_the_connection_stays(chat: Callable[..., Chat], sent: str, code: str) -> None:
    room = chat()
    ws = room.connect(max_message_size=2**16)
    ws.send(sent)
    refused = event(ws)
    assert (refused["type"], refused["code"]) == ("error", code)
    ws.send(sent.encode(), binary=True)  # the same as a binary message
    assert event(ws)["code"] == code
    ws.send(json.dumps({"type": "join", "name": "ann"}))
    assert event(ws)["type"] == "welcome"


@pytest.mark.parametrize("text", ["", "   ", None, 42, "x" * (MAX_TEXT + 1)])
def test_bad_lines_are_refused(chat: Callable[..., Chat], text: object) -> None:
    room = chat()
    ann, _ = room.join("ann")
    ann.send(json.dumps({"type": "say", "text": text}))
    assert event(ann)["code"] == "bad-text"
    assert room.hub.stats().published == 0


# -- the rate limit ------------------------------------------------------------------------------


def test_the_demo_closes_a_flooder_with_1008() -> None:
    assert ChatHandler.room.hub.rate_limit is SAY_LIMIT
    assert SAY_LIMIT.action == "close" and SAY_LIMIT.close_code == 1008


def test_a_member_over_its_rate_is_closed_with_1008(chat: Callable[..., Chat]) -> None:
    room = chat(RateLimit(rate=0.001, burst=5, action="close"))  # 5 lines, then none for 1000 s
    ann, _ = room.join("ann")
    flooder, _ = room.join("flooder")
    for index in range(8):
        say(flooder, f"flood {index}")
    with pytest.raises(ConnectionClosed):
        while True:  # what it had before the close frame
            flooder.recv()
    assert flooder.wait_closed() == (1008, "publishing too fast")
    room.manual.run()
    heard = []
    while True:
        received = event(ann)
        if received["type"] == "presence" and received["left"]:
            break
        if received["type"] == "message":
            heard.append(received["text"])
    assert heard == [f"flood {index}" for index in range(5)]
    nothing_else(ann)


def test_under_a_drop_limit_the_speaker_is_told_in_order(chat: Callable[..., Chat]) -> None:
    room = chat(RateLimit(rate=0.001, burst=2, action="drop"))
    ann, _ = room.join("ann")
    for index in range(3):
        say(ann, f"line {index}")
    room.manual.run()
    kinds = [event(ann) for _ in range(4)]
    assert [k.get("text") for k in kinds[:3]] == [None, "line 0", "line 1"]  # the presence update, then
    assert kinds[3]["code"] == "too-fast"
    assert not ann.closed


# -- ordering -----------------------------------------------------------------------------------


def test_replies_keep_their_place_among_the_rooms_messages(chat: Callable[..., Chat]) -> None:
    """Issue 12: an error reply overtook the room's messages sent before it. 100 runs per door,
    each a new member: welcome, its join, its line, the error, always in that order."""
    room = chat()
    listener, _ = room.join("listener")
    room.manual.run()
    event(listener)
    for run in range(100):
        ws = room.connect()
        ws.send(json.dumps({"type": "join", "name": f"run{run}"}))
        say(ws, f"line {run}")
        ws.send("not json")
        received = [event(ws) for _ in range(4)]
        assert [r["type"] for r in received] == ["welcome", "presence", "message", "error"], (run, received)
        assert received[1]["joined"][0]["id"] == received[0]["id"]
        assert received[2]["text"] == f"line {run}"
        ws.close()
        ws.shutdown()  # its door too: a hundred of them need not wait for the end
        assert room.manual.run() == 1
    while (update := event(listener))["type"] != "message" or update["text"] != "line 99":
        pass


def test_a_burst_of_lines_and_errors_arrives_as_sent(chat: Callable[..., Chat]) -> None:
    """A member that reads nothing for a while: its replies queue behind the room's messages."""
    room = chat()
    listener, _ = room.join("listener")
    ann, _ = room.join("ann")
    room.manual.run()
    for ws in (listener, ann):
        event(ws)
    for index in range(100):
        say(ann, f"line {index}")
        ann.send(json.dumps({"type": "shout"}))
    for index in range(100):
        assert event(ann)["text"] == f"line {index}"
        assert event(ann)["code"] == "bad-request"
    for index in range(100):
        assert event(listener)["text"] == f"line {index}"


# -- who may connect ----------------------------------------------------------------------------


def test_a_page_from_another_origin_is_refused_with_403() -> None:
    origins = page_origins("127.0.0.1", 8080, ())
    with pytest.raises(InvalidStatus) as refused:
        connect(ChatHandler, "/ws", origins=origins, origin="http://evil.example")
    assert refused.value.status == 403
    for own in ("http://127.0.0.1:8080", "http://localhost:8080", None):
        with connect(ChatHandler, "/ws", origins=origins, origin=own) as ws:
            ws.send("{}")
            assert event(ws)["code"] == "bad-request"


def test_the_page_builds_its_text_without_html() -> None:
    """Names and lines come from strangers: the page writes them with textContent only."""
    html = page().decode()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in html


def test_a_closed_member_is_gone_from_the_room(chat: Callable[..., Chat]) -> None:
    room = chat()
    ann, _ = room.join("ann")
    ann.close()
    with pytest.raises(ConnectionClosed):
        ann.recv(timeout=1)
    assert room.hub.presence("chat") == []
    room.manual.run()
    _, hello = room.join("bob")
    assert hello["online"] == members((hello["id"], "bob"))
