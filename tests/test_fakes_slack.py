"""The fake Slack answers the real slack_sdk and Bolt clients the way Slack does.

Adapter tests lean on this fake; if it drifted from Slack, they would pass against a Slack
that does not exist. So these tests drive it only through the real clients.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.http_retry.builtin_interval_calculators import FixedValueRetryIntervalCalculator
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes.slack_api import (
    CONNECTION_RESET,
    RATE_LIMITED,
    SERVER_ERROR,
    AckTimeout,
    FakeSlack,
    fake_slack,
)
from tests.fakes.slack_signing import (
    SIGNING_SECRET,
    WORKSPACE,
    reaction_added,
    sign,
    signed_form,
    signed_json,
    slash_command,
    thread_message,
    url_verification,
)

CONTENT = "C0CONTENT1"
OPS = "C0OPS00001"


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with fake_slack(channels={CONTENT: "content", OPS: "ops"}) as fake:
        yield fake


@pytest.fixture
def client(slack: FakeSlack) -> AsyncWebClient:
    return AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)


@pytest.fixture(autouse=True)
def no_proxy_for_socket_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    # slack_sdk's Socket Mode client reads HTTP(S)_PROXY but not NO_PROXY: a proxy set on a
    # CI runner would swallow connections to 127.0.0.1.
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(name, raising=False)


# ---------------------------------------------------------------- Web API


async def test_auth_test_names_the_bot(client: AsyncWebClient) -> None:
    me = await client.auth_test()
    assert (me["user_id"], me["bot_id"], me["team_id"]) == (
        WORKSPACE.bot_user_id,
        WORKSPACE.bot_id,
        WORKSPACE.team_id,
    )


async def test_post_update_and_reply_in_thread(slack: FakeSlack, client: AsyncWebClient) -> None:
    card = await client.chat_postMessage(channel=CONTENT, text="Run #1 started")
    note = await client.chat_postMessage(channel=CONTENT, text="notes", thread_ts=card["ts"])
    await client.chat_update(channel=CONTENT, ts=card["ts"], text="Run #1 succeeded")

    assert card["channel"] == CONTENT
    assert card["message"]["bot_id"] == WORKSPACE.bot_id
    assert float(note["ts"]) > float(card["ts"])
    assert note["message"]["thread_ts"] == card["ts"]
    [shown] = slack.top_level(CONTENT)
    assert shown.text == "Run #1 succeeded"
    assert [e["text"] for e in shown.edits] == ["Run #1 started"]
    assert shown.reply_count == 1
    assert [m.text for m in slack.thread(CONTENT, card["ts"])] == ["notes"]


async def test_a_reply_to_a_reply_lands_in_the_parent_thread(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    parent = slack.add_user_message(CONTENT, "U0ALICE001", "/crew run blog-post")
    first = await client.chat_postMessage(channel=CONTENT, text="a", thread_ts=parent.ts)
    await client.chat_postMessage(channel=CONTENT, text="b", thread_ts=first["ts"])
    assert [m.text for m in slack.thread(CONTENT, parent.ts)] == ["a", "b"]


async def test_form_and_json_bodies_are_both_understood(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*draft v1*"}}]
    await client.chat_postMessage(channel=CONTENT, text="draft v1", blocks=blocks)  # JSON
    await client.api_call(  # form-encoded, blocks as JSON text, as curl users send it
        "chat.postMessage",
        data={"channel": OPS, "text": "alert", "blocks": json.dumps(blocks)},
    )
    json_call, form_call = slack.calls_to("chat.postMessage")
    assert json_call.headers["Content-Type"].startswith("application/json")
    assert form_call.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert slack.top_level(CONTENT)[0].blocks == blocks
    assert slack.top_level(OPS)[0].blocks == blocks


async def test_slack_errors_are_http_200_with_ok_false(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    with pytest.raises(SlackApiError) as unknown:
        await client.chat_postMessage(channel="C0NOWHERE", text="hi")
    with pytest.raises(SlackApiError) as empty:
        await client.api_call("chat.postMessage", json={"channel": CONTENT})
    with pytest.raises(SlackApiError) as too_many:
        await client.chat_postMessage(channel=CONTENT, text="x", blocks=[{"type": "divider"}] * 51)
    with pytest.raises(SlackApiError) as gone:
        await client.chat_update(channel=CONTENT, ts="1.000001", text="x")

    assert unknown.value.response.status_code == 200
    assert unknown.value.response["error"] == "channel_not_found"
    assert empty.value.response["error"] == "no_text"
    assert too_many.value.response["error"] == "invalid_blocks"
    assert gone.value.response["error"] == "message_not_found"
    assert slack.messages[CONTENT] == []


async def test_channel_names_resolve_to_ids(slack: FakeSlack, client: AsyncWebClient) -> None:
    posted = await client.chat_postMessage(channel="#ops", text="digest")
    assert posted["channel"] == OPS


async def test_direct_messages_and_ephemeral_notices(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    opened = await client.conversations_open(users="U0BOB00001")
    await client.chat_postMessage(channel="U0BOB00001", text="you may not approve run #4")
    notice = await client.chat_postEphemeral(channel=CONTENT, user="U0BOB00001", text="psst")

    assert opened["channel"]["id"] == slack.dm_channels["U0BOB00001"]
    assert [m.text for m in slack.dm("U0BOB00001")] == ["you may not approve run #4"]
    assert notice["message_ts"]
    assert [(e.user, e.text) for e in slack.ephemerals] == [("U0BOB00001", "psst")]
    assert slack.messages[CONTENT] == []  # nobody else sees an ephemeral


async def test_reactions_and_missing_scopes() -> None:
    async with fake_slack(scopes=["chat:write", "reactions:read"]) as slack:
        client = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)
        draft = await client.chat_postMessage(channel=CONTENT, text="draft v1")
        with pytest.raises(SlackApiError) as refused:
            await client.reactions_add(channel=CONTENT, timestamp=draft["ts"], name="eyes")
        assert refused.value.response["error"] == "missing_scope"
        assert refused.value.response["needed"] == "reactions:write"
        assert refused.value.response.headers["x-oauth-scopes"] == "chat:write,reactions:read"

    async with fake_slack() as slack:
        client = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)
        draft = await client.chat_postMessage(channel=CONTENT, text="draft v1")
        await client.reactions_add(channel=CONTENT, timestamp=draft["ts"], name="eyes")
        with pytest.raises(SlackApiError, match="already_reacted"):
            await client.reactions_add(channel=CONTENT, timestamp=draft["ts"], name="eyes")
        assert slack.message(CONTENT, draft["ts"]).reactions == {"eyes": [WORKSPACE.bot_user_id]}


async def test_bad_or_missing_token(slack: FakeSlack) -> None:
    with pytest.raises(SlackApiError) as bad:
        await AsyncWebClient(token="xoxb-wrong", base_url=slack.api_url).auth_test()
    with pytest.raises(SlackApiError) as missing:
        await AsyncWebClient(base_url=slack.api_url).auth_test()
    assert bad.value.response["error"] == "invalid_auth"
    assert missing.value.response["error"] == "not_authed"


async def test_rate_limit_is_retried_after_retry_after(slack: FakeSlack) -> None:
    plain = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)
    patient = AsyncWebClient(
        token=slack.bot_token,
        base_url=slack.api_url,
        retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=1)],
    )
    slack.script_rate_limit("chat.postMessage", retry_after=1)
    with pytest.raises(SlackApiError) as limited:  # the default handlers do not retry 429
        await plain.chat_postMessage(channel=CONTENT, text="first")
    assert limited.value.response.status_code == 429
    assert limited.value.response.headers["Retry-After"] == "1"
    assert limited.value.response["error"] == "ratelimited"

    slack.script_rate_limit("chat.postMessage", retry_after=1)
    started = time.monotonic()
    posted = await patient.chat_postMessage(channel=CONTENT, text="second")
    assert time.monotonic() - started >= 1
    assert posted["ok"]
    assert [c.status for c in slack.calls_to("chat.postMessage")] == [429, 429, 200]
    assert [m.text for m in slack.top_level(CONTENT)] == ["second"]


async def test_server_errors(slack: FakeSlack) -> None:
    retrying = AsyncWebClient(
        token=slack.bot_token,
        base_url=slack.api_url,
        retry_handlers=[AsyncServerErrorRetryHandler(max_retry_count=1)],
    )
    slack.script_error("chat.postMessage", status=500)
    assert (await retrying.chat_postMessage(channel=CONTENT, text="hi"))["ok"]

    slack.script_response("chat.update", status=503, body="<html>Service Unavailable</html>")
    with pytest.raises(SlackApiError) as failed:
        await AsyncWebClient(token=slack.bot_token, base_url=slack.api_url).chat_update(
            channel=CONTENT, ts="1.1", text="x"
        )
    assert failed.value.response.status_code == 503


async def test_files_upload_v2(slack: FakeSlack, client: AsyncWebClient) -> None:
    card = await client.chat_postMessage(channel=OPS, text="digest")
    done = await client.files_upload_v2(
        channel=OPS,
        thread_ts=card["ts"],
        filename="runs.png",
        title="Runs per day",
        content=b"\x89PNG fake chart",
        initial_comment="Daily chart",
    )
    [upload] = slack.files.values()
    assert done["file"]["id"] == upload.id
    assert upload.content == b"\x89PNG fake chart"
    assert upload.shared_to == [OPS]
    [shared] = slack.thread(OPS, card["ts"])
    assert (shared.text, shared.files[0]["title"]) == ("Daily chart", "Runs per day")


async def test_uploads_are_refused_as_slack_refuses_them() -> None:
    async with fake_slack(channels=[CONTENT, OPS], outside=[OPS]) as slack:
        member = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)
        with pytest.raises(SlackApiError, match="invalid_auth"):
            await AsyncWebClient(token="xoxb-wrong", base_url=slack.api_url).files_upload_v2(
                channel=CONTENT, filename="a.png", content=b"png"
            )
        with pytest.raises(SlackApiError, match="invalid_arguments"):
            await member.files_getUploadURLExternal(filename="a.png", length=0)
        with pytest.raises(SlackApiError, match="not_in_channel"):
            await member.files_upload_v2(channel=OPS, filename="a.png", content=b"png")
        with pytest.raises(SlackApiError, match="not_in_channel"):
            await member.chat_postMessage(channel=OPS, text="hi")
        done = await member.files_upload_v2(channel=CONTENT, filename="b.png", content=b"png2")
        assert [f.id for f in slack.uploads_in(CONTENT)] == [done["file"]["id"]]
        assert slack.uploads_in(OPS) == []


async def faulty_posts(client: AsyncWebClient, n: int) -> list[tuple[str, object]]:
    """Post `n` messages one by one; what each call came to: its ts, or the exception."""
    outcomes: list[tuple[str, object]] = []
    for i in range(n):
        try:
            posted = await client.chat_postMessage(channel=CONTENT, text=f"message {i}")
            outcomes.append((f"message {i}", posted["ts"]))
        except (SlackApiError, aiohttp.ClientError) as exc:
            outcomes.append((f"message {i}", exc))
    return outcomes


async def test_a_seeded_share_of_calls_fails_as_slack_fails_and_changes_nothing(
    slack: FakeSlack,
) -> None:
    bare = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url, retry_handlers=[])
    slack.fail_randomly(0.3, seed=11, retry_after=2)
    outcomes = await faulty_posts(bare, 100)

    failed = [(text, e) for text, e in outcomes if isinstance(e, Exception)]
    assert slack.faults == Counter(c.fault for c in slack.calls if c.fault)
    assert 20 <= len(failed) == sum(slack.faults.values()) <= 40
    assert set(slack.faults) == {RATE_LIMITED, SERVER_ERROR, CONNECTION_RESET}
    for call, (_, outcome) in zip(slack.calls, outcomes, strict=True):
        if call.fault == RATE_LIMITED:
            assert isinstance(outcome, SlackApiError)
            assert outcome.response.status_code == 429
            assert outcome.response.headers["Retry-After"] == "2"
            assert outcome.response.data == {"ok": False, "error": "ratelimited"}
        elif call.fault == SERVER_ERROR:
            assert isinstance(outcome, SlackApiError)
            assert outcome.response.status_code == 500
            assert outcome.response.data == {"ok": False, "error": "internal_error"}
        elif call.fault == CONNECTION_RESET:  # no answer at all: reset, or closed
            assert isinstance(outcome, aiohttp.ClientOSError | aiohttp.ServerDisconnectedError)
            assert call.status == 0 and call.error == "connection reset"
        else:
            assert call.ok and isinstance(outcome, str)
    # a failed call had no effect: the channel holds exactly the posts that were answered ok
    delivered = [text for text, outcome in outcomes if isinstance(outcome, str)]
    assert [m.text for m in slack.top_level(CONTENT)] == delivered
    cut = {type(e) for _, e in outcomes if isinstance(e, aiohttp.ClientConnectionError)}
    assert cut == {aiohttp.ClientOSError, aiohttp.ServerDisconnectedError}

    # the same seed fails the same calls in the same ways
    async with fake_slack(channels=[CONTENT]) as again:
        again.fail_randomly(0.3, seed=11, retry_after=2)
        client = AsyncWebClient(token=again.bot_token, base_url=again.api_url, retry_handlers=[])
        await faulty_posts(client, 100)
        assert [c.fault for c in again.calls] == [c.fault for c in slack.calls]


async def test_the_sdk_retry_handlers_ride_out_the_faults_and_nothing_is_doubled(
    slack: FakeSlack,
) -> None:
    at_once = FixedValueRetryIntervalCalculator(fixed_internal=0.01)
    patient = AsyncWebClient(
        token=slack.bot_token,
        base_url=slack.api_url,
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(max_retry_count=4, interval_calculator=at_once),
            AsyncServerErrorRetryHandler(max_retry_count=4, interval_calculator=at_once),
        ],
    )
    slack.fail_randomly(0.3, seed=5, kinds=[SERVER_ERROR, CONNECTION_RESET])
    outcomes = await faulty_posts(patient, 30)
    assert all(isinstance(ts, str) for _, ts in outcomes)
    assert slack.faults[SERVER_ERROR] and slack.faults[CONNECTION_RESET]
    assert [m.text for m in slack.top_level(CONTENT)] == [f"message {i}" for i in range(30)]

    # only the methods named fail; once stopped, nothing fails
    bare = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url, retry_handlers=[])
    slack.fail_randomly(1.0, seed=5, methods=["chat.update"])
    posted = await bare.chat_postMessage(channel=CONTENT, text="edit me")
    with pytest.raises((SlackApiError, aiohttp.ClientError)):
        await bare.chat_update(channel=CONTENT, ts=posted["ts"], text="edited")
    assert slack.message(CONTENT, posted["ts"]).edits == []
    slack.stop_failing()
    await bare.chat_update(channel=CONTENT, ts=posted["ts"], text="edited")
    assert slack.message(CONTENT, posted["ts"]).text == "edited"


# ---------------------------------------------------------------- Socket Mode


async def test_connections_open_needs_the_app_token(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    with pytest.raises(SlackApiError, match="not_allowed_token_type"):
        await client.apps_connections_open(app_token=slack.bot_token)
    opened = await client.apps_connections_open(app_token=slack.app_token)
    assert opened["url"].startswith(slack.base_url.replace("http://", "ws://") + "/link/?ticket=")


async def test_sdk_socket_mode_client_receives_and_acks(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    received: list[SocketModeRequest] = []

    async def on_request(sm: SocketModeClient, req: SocketModeRequest) -> None:
        received.append(req)
        await sm.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id))

    sm = SocketModeClient(app_token=slack.app_token, web_client=client)
    sm.socket_mode_request_listeners.append(on_request)  # type: ignore[arg-type]
    await sm.connect()
    try:
        event = thread_message(
            user="U0ALICE001", text="shorter please", channel=CONTENT, thread_ts="1.000100"
        )
        ack = await slack.push_envelope("events_api", event, timeout=3)
    finally:
        await sm.close()

    assert ack == {"envelope_id": received[0].envelope_id}
    assert received[0].type == "events_api"
    assert received[0].payload["event"]["text"] == "shorter please"
    assert slack.socket_received[0] == ack


async def test_bolt_socket_mode_handler_acks_commands_and_events(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    app = AsyncApp(client=client)
    reactions: list[dict[str, Any]] = []

    @app.command("/crew")
    async def crew(ack: AsyncAck, command: dict[str, Any]) -> None:
        await ack(f"got: {command['text']}")

    @app.event("reaction_added")
    async def reacted(event: dict[str, Any]) -> None:
        reactions.append(event)

    handler = AsyncSocketModeHandler(app, slack.app_token)
    await handler.connect_async()
    try:
        command_ack = await slack.push_envelope(
            "slash_commands", slash_command("status"), timeout=3
        )
        event = reaction_added(
            user="U0EDITOR01", reaction="white_check_mark", channel=CONTENT, ts="1.000100"
        )
        event_ack = await slack.push_envelope("events_api", event, timeout=3)
        async with asyncio.timeout(3):
            while not reactions:
                await asyncio.sleep(0.01)
    finally:
        await handler.close_async()

    assert command_ack["payload"] == {"text": "got: status"}
    assert set(event_ack) == {"envelope_id"}
    assert reactions[0]["reaction"] == "white_check_mark"
    assert [c.method for c in slack.calls] == ["apps.connections.open", "auth.test"]


async def test_an_unanswered_envelope_times_out(slack: FakeSlack, client: AsyncWebClient) -> None:
    sm = SocketModeClient(app_token=slack.app_token, web_client=client)  # no listener: no ack
    await sm.connect()
    try:
        with pytest.raises(AckTimeout):
            await slack.push_envelope("slash_commands", slash_command("help"), timeout=0.2)
    finally:
        await sm.close()


# ---------------------------------------------------------------- signing helpers


def test_signature_matches_slacks_documented_example() -> None:
    # The worked example from Slack's "Verifying requests from Slack" guide.
    secret = "8f742231b10e8888abcd99yyyzzz85a5"
    body = (
        "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&"
        "channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&"
        "command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2F"
        "commands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&"
        "trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
    )
    headers = sign(secret, 1531420618, body)
    assert headers["X-Slack-Signature"] == (
        "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
    )


def test_signed_events_carry_retry_headers() -> None:
    body, headers = signed_json(
        reaction_added(user="U1", reaction="x", channel="C1", ts="1.1"), retry_num=2
    )
    expected = hmac.new(
        b"8f742231b10e8888abcd99yyyzzz85a5",
        f"v0:{headers['X-Slack-Request-Timestamp']}:{body}".encode(),
        hashlib.sha256,
    ).hexdigest()
    assert headers["X-Slack-Signature"] == f"v0={expected}"
    assert headers["X-Slack-Retry-Num"] == "2"
    assert json.loads(body)["event_id"].startswith("Ev")


@pytest.mark.parametrize("how", ["disconnect message", "dropped connection"])
async def test_socket_mode_client_reconnects(
    slack: FakeSlack, client: AsyncWebClient, how: str
) -> None:
    async def ack(sm: SocketModeClient, req: SocketModeRequest) -> None:
        await sm.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id))

    sm = SocketModeClient(app_token=slack.app_token, web_client=client, ping_interval=0.2)
    sm.socket_mode_request_listeners.append(ack)  # type: ignore[arg-type]
    await sm.connect()
    try:
        if how == "disconnect message":
            await slack.send_disconnect()
        else:
            await slack.drop_sockets()
        async with asyncio.timeout(3):
            while slack.socket_connections < 2:
                await asyncio.sleep(0.01)
        ack_payload = await slack.push_envelope("slash_commands", slash_command("help"), timeout=3)
    finally:
        await sm.close()
    assert "envelope_id" in ack_payload


async def test_bolt_http_mode_accepts_the_signed_requests(client: AsyncWebClient) -> None:
    app = AsyncApp(client=client, signing_secret=SIGNING_SECRET)
    reactions: list[dict[str, Any]] = []

    @app.command("/crew")
    async def crew(ack: AsyncAck, command: dict[str, Any]) -> None:
        await ack(f"got: {command['text']}")

    @app.event("reaction_added")
    async def reacted(ack: AsyncAck, event: dict[str, Any]) -> None:
        await ack()
        reactions.append(event)

    async def dispatch(body: str, headers: dict[str, str]) -> tuple[int, str]:
        response = await app.async_dispatch(AsyncBoltRequest(body=body, headers=headers))
        return response.status, response.body

    command_body, command_headers = signed_form(slash_command("status"))
    status, answer = await dispatch(command_body, command_headers)
    assert (status, answer) == (200, "got: status")  # a text ack is a text/plain body

    event = reaction_added(user="U0EDITOR01", reaction="repeat", channel=CONTENT, ts="1.000100")
    assert (await dispatch(*signed_json(event)))[0] == 200  # acked before the listener ran
    async with asyncio.timeout(3):
        while not reactions:
            await asyncio.sleep(0.01)
    assert reactions[0]["reaction"] == "repeat"

    challenge = url_verification("c-123")
    assert json.loads((await dispatch(*signed_json(challenge)))[1]) == {"challenge": "c-123"}

    tampered = command_body.replace("status", "cancel")
    assert (await dispatch(tampered, command_headers))[0] == 401
    stale = signed_form(slash_command("status"), timestamp=int(time.time()) - 301)
    assert (await dispatch(*stale))[0] == 401
