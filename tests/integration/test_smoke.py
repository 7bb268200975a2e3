from tests.support import LiveServer


async def test_two_clients_see_a_comment(server: LiveServer, connect) -> None:
    a = await connect(server, "smoke-a", "host")
    b = await connect(server, "smoke-b", codec="json")
    await a.join("smoke")
    await b.join("smoke")
    await a.action("smoke", "comment", {"text": "hi"})
    got = await b.expect("action", kind="comment")
    assert got["body"] == {"text": "hi"}
    assert got["from"]["id"] == "smoke-a"
