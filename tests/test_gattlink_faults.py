"""Link faults, hostile peers on both sides, the control channel, concurrency, retry-connector."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator

import pytest
from bleak import BleakClient
from bleak.exc import BleakError
from bleak_retry_connector import BleakClientWithServiceCache, establish_connection

from drivers.ble import client_backend_for, find_device, make_client
from drivers.loopback import LoopbackClientBackend
from protocols import gattlink as gl
from simulators.cli import main as sim_main
from simulators.control import ControlError, ControlServer, send_control
from simulators.gatt_server import GattServer
from tests.test_gattlink_bleak import BATTERY_LEVEL, CMD, EVT, SERIAL, Device, build_device


@pytest.fixture
async def device() -> AsyncIterator[Device]:
    dev = build_device()
    async with dev.server:
        yield dev


@pytest.fixture
async def control(device: Device) -> AsyncIterator[ControlServer]:
    ctl = ControlServer()
    ctl.register_faults(device.server.faults)
    async with ctl:
        yield ctl


async def _until(cond: object, what: str) -> None:
    for _ in range(500):
        if callable(cond) and cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


# -- faults through the real bleak API ------------------------------------------------------
async def test_link_drop_fires_the_callback_and_fails_operations(
    device: Device, control: ControlServer
) -> None:
    lost = asyncio.Event()
    client = make_client(device.address, disconnected_callback=lambda _c: lost.set())
    await client.connect()
    assert await send_control(control.address, "drop") == {"dropped": 1}
    await asyncio.wait_for(lost.wait(), 5)
    assert not client.is_connected
    with pytest.raises(BleakError):
        await client.read_gatt_char(BATTERY_LEVEL)
    await client.connect()  # the device is still there: a reconnect works
    assert await client.read_gatt_char(BATTERY_LEVEL) == b"\x64"
    await client.disconnect()


async def test_drop_while_waiting_fails_the_pending_request_with_bleak_error(
    device: Device,
) -> None:
    lost: list[BleakClient] = []
    client = make_client(device.address, disconnected_callback=lost.append)
    await client.connect()
    device.server.faults.apply("reply_delay_ms", 5000)
    read = asyncio.create_task(client.read_gatt_char(BATTERY_LEVEL))
    await asyncio.sleep(0.05)
    device.server.faults.apply("drop")
    with pytest.raises(BleakError, match="disconnected"):
        await asyncio.wait_for(read, 5)
    assert lost == [client]


async def test_delay_keeps_every_operation_working_and_in_order(
    device: Device, control: ControlServer
) -> None:
    await send_control(control.address, "delay_ms", 30)
    async with make_client(device.address) as client:
        got: list[bytearray] = []
        await client.start_notify(EVT, lambda _c, d: got.append(d))
        for i in range(3):
            await client.write_gatt_char(CMD, b"n%d" % i, response=True)
        await client.write_gatt_char(CMD, b"cmd", response=False)
        assert await client.read_gatt_char(BATTERY_LEVEL) == b"\x64"
        assert got == [b"ack:n0", b"ack:n1", b"ack:n2", b"ack:cmd"]
    assert (await send_control(control.address, "faults"))["delay_ms"] == 30


async def test_slow_reply_beyond_the_callers_timeout_leaves_the_link_usable(device: Device) -> None:
    async with make_client(device.address) as client:
        device.server.faults.apply("reply_delay_ms", 400)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await client.read_gatt_char(SERIAL)
        device.server.faults.apply("reply_delay_ms", 0)
        # the late answer to the abandoned read is discarded, not mistaken for this one
        assert await client.read_gatt_char(BATTERY_LEVEL) == b"\x64"
        assert client.is_connected


async def test_att_timeout_drops_the_link(device: Device, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(LoopbackClientBackend, "att_timeout", 0.2)
    lost = asyncio.Event()
    async with make_client(device.address, disconnected_callback=lambda _c: lost.set()) as client:
        device.server.faults.apply("reply_delay_ms", 2000)
        with pytest.raises(BleakError, match="no answer"):
            await client.read_gatt_char(BATTERY_LEVEL)
        assert lost.is_set() and not client.is_connected


async def test_corrupt_frame_drops_the_link(
    device: Device, control: ControlServer, caplog: pytest.LogCaptureFixture
) -> None:
    lost = asyncio.Event()
    client = make_client(device.address, disconnected_callback=lambda _c: lost.set())
    await client.connect()
    await send_control(control.address, "corrupt", 1)
    with caplog.at_level(logging.WARNING), pytest.raises(BleakError):
        await client.read_gatt_char(BATTERY_LEVEL)
    await asyncio.wait_for(lost.wait(), 5)
    assert "malformed frame" in caplog.text
    assert device.server.faults.corrupt == 0
    await client.connect()
    assert await client.read_gatt_char(BATTERY_LEVEL) == b"\x64"
    await client.disconnect()


async def test_refused_connections(device: Device, control: ControlServer) -> None:
    await send_control(control.address, "refuse", True)
    client = make_client(device.address)
    with pytest.raises(BleakError, match="refused"):
        await client.connect()
    assert not client.is_connected
    await send_control(control.address, "refuse", False)
    await client.connect()
    await client.disconnect()


async def test_out_of_range_device_is_silent_until_it_comes_back(
    device: Device, control: ControlServer
) -> None:
    lost = asyncio.Event()
    client = make_client(device.address, disconnected_callback=lambda _c: lost.set(), timeout=0.3)
    await client.connect()
    await send_control(control.address, "out_of_range", True)
    await asyncio.wait_for(lost.wait(), 5)
    with pytest.raises(TimeoutError):  # BLE: a connection attempt to an absent device times out
        await client.connect()
    assert await find_device(device.address, timeout=0.5) is None
    await send_control(control.address, "out_of_range", False)
    assert await find_device(device.address, timeout=5) is not None
    await client.connect()
    assert await client.read_gatt_char(BATTERY_LEVEL) == b"\x64"
    await client.disconnect()


async def test_clear_switches_everything_off(device: Device, control: ControlServer) -> None:
    for name, value in [
        ("delay_ms", 5),
        ("reply_delay_ms", 5),
        ("corrupt", 3),
        ("refuse", True),
        ("out_of_range", True),
    ]:
        await send_control(control.address, name, value)
    assert await send_control(control.address, "clear") == {
        "delay_ms": 0.0,
        "reply_delay_ms": 0.0,
        "corrupt": 0,
        "refuse": False,
        "out_of_range": False,
    }


# -- the control channel ----------------------------------------------------------------------
async def test_control_refuses_unknown_names_and_bad_values(control: ControlServer) -> None:
    with pytest.raises(ControlError, match=r"unknown control 'jam'.*delay_ms"):
        await send_control(control.address, "jam", True)
    with pytest.raises(ControlError, match="milliseconds"):
        await send_control(control.address, "delay_ms", -1)
    with pytest.raises(ControlError, match="true or false"):
        await send_control(control.address, "refuse", "maybe")
    assert "drop" in await send_control(control.address, "help")


async def test_control_custom_handlers_and_raw_protocol(control: ControlServer) -> None:
    state = {"jammed": False}

    async def jam(value: object) -> dict[str, bool]:
        if not isinstance(value, bool):
            raise ValueError("jam takes true or false")
        state["jammed"] = value
        return state

    control.register("jam", jam, "jam the bolt")
    assert await send_control(control.address, "jam", True) == {"jammed": True}
    reader, writer = await asyncio.open_connection("127.0.0.1", control.port)
    try:
        for line, ok in [
            (b"not json\n", False),
            (b"[1]\n", False),
            (b'{"name": "jam", "value": false}\n', True),
            (b'{"name": "jam", "extra": 1}\n', False),
        ]:
            writer.write(line)
            reply = json.loads(await reader.readline())
            assert reply["ok"] is ok, reply
    finally:
        writer.close()
        await writer.wait_closed()
    assert state["jammed"] is False


async def test_control_unreachable_is_a_control_error() -> None:
    ctl = ControlServer()
    await ctl.start()
    address = ctl.address
    await ctl.close()
    with pytest.raises(ControlError, match="did not answer"):
        await send_control(address, "help", timeout=1)
    with pytest.raises(ControlError, match="host:port"):
        await send_control("nonsense", "help")


def _printed_json(out: str) -> object:
    # the in-process simulator logs to the same stdout; the command prints one JSON document
    return json.loads(out[out.index("{\n") :])


async def test_lockgw_sim_fault_command(
    control: ControlServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await sim_main(["fault", "--control", control.address, "delay_ms", "30"]) == 0
    assert _printed_json(capsys.readouterr().out) == {
        "delay_ms": 30.0,
        "reply_delay_ms": 0.0,
        "corrupt": 0,
        "refuse": False,
        "out_of_range": False,
    }
    assert await sim_main(["fault", "--control", control.address, "refuse", "true"]) == 0
    assert _printed_json(capsys.readouterr().out)["refuse"] is True  # type: ignore[index]
    assert await sim_main(["fault", "--control", control.address, "nonsense"]) == 1
    assert "unknown control" in capsys.readouterr().err


# -- hostile peers ----------------------------------------------------------------------------
async def _raw_link(server: GattServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(gl.pack(gl.Connect()))
    header = await reader.readexactly(4)
    hello = gl.decode_from_peripheral(await reader.readexactly(gl.FrameBuffer.body_length(header)))
    assert isinstance(hello, gl.Hello)
    return reader, writer


async def _read_rest(reader: asyncio.StreamReader) -> bytes:
    async with asyncio.timeout(5):
        return await reader.read()


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00\x00\x00\x03abc",  # not CBOR
        b"\x00\x00\x00\x01\x80",  # an array
        b"\x00\x00\x00\x00",  # zero length
        b"\xff\xff\xff\xff",  # oversize declared length
        b"\x00\x00\x00\x0b" + b"\xa2at\x66notify\x61",  # a map cut short inside its frame
        b"\x00\x00\x00\x14" + b"\xa2at\x66",  # the stream ends inside a frame
        gl.pack(gl.Notification(1, b"x")),  # a peripheral frame from a central
        gl.pack(gl.Connect()),  # a handshake in the middle of a link
    ],
)
async def test_server_drops_a_central_that_sends_garbage_and_serves_others(
    device: Device, garbage: bytes
) -> None:
    async with make_client(device.address) as good:
        reader, writer = await _raw_link(device.server)
        writer.write(garbage)
        truncated = garbage.startswith(b"\x00\x00\x00\x14")
        if truncated:
            writer.write_eof()  # the body never completes
        rest = await _read_rest(reader)
        writer.close()
        assert bool(rest) is not truncated  # a goodbye naming the problem, then the end
        if rest:
            buf = gl.FrameBuffer()
            buf.feed(rest)
            body = buf.next_frame()
            assert body is not None
            bye = gl.decode_from_peripheral(body)
            assert isinstance(bye, gl.Disconnect)
            assert "malformed" in bye.reason or "unexpected Connect" in bye.reason
        assert await good.read_gatt_char(BATTERY_LEVEL) == b"\x64"
    await _until(lambda: not device.server.connections, "server forgot the hostile link")


async def test_server_ignores_silent_and_truncated_handshakes(device: Device) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", device.server.port)
    writer.write(b"\x00\x00\x00\x05\xa1")
    writer.write_eof()
    assert await _read_rest(reader) == b""
    writer.close()
    async with make_client(device.address) as client:
        assert client.is_connected


async def _fake_peripheral(answers: list[bytes]) -> tuple[asyncio.Server, str]:
    """A hostile peripheral: the i-th frame the central sends is answered with answers[i];
    an empty answer closes the stream there."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception, asyncio.CancelledError):
            for answer in answers:
                if not answer:
                    break
                await reader.readexactly(gl.FrameBuffer.body_length(await reader.readexactly(4)))
                writer.write(answer)
                await writer.drain()
            else:
                await reader.read()  # hold the link until the central closes it
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, f"loopback://127.0.0.1:{server.sockets[0].getsockname()[1]}"


HELLO = gl.pack(gl.Hello("evil", 247))
SERVICES = gl.pack(
    gl.Services(
        1,
        (
            gl.ServiceDef(
                gl.normalize_uuid(0x180F), 1, (gl.CharacteristicDef(BATTERY_LEVEL, 2, 0x12),)
            ),
        ),
    )
)


@pytest.mark.parametrize(
    ("frames", "phase"),
    [
        ([b"\x00\x00\x00\x03abc"], "connect"),
        ([gl.pack(gl.Advertisement("x"))], "connect"),
        ([b"\xff\xff\xff\xff"], "connect"),
        ([HELLO, gl.pack(gl.Read(1, 2))], "connect"),  # a central frame from a peripheral
        ([HELLO, gl.pack(gl.Ok(7))], "connect"),  # an answer to a request never made
        ([HELLO, gl.pack(gl.Value(1, b"x"))], "connect"),  # the wrong answer type
        ([HELLO, SERVICES, b"\x00\x00\x00\x02\xa1\x61"], "link"),
        ([HELLO, SERVICES, gl.pack(gl.Hello("again", 247))], "link"),
        ([HELLO, SERVICES, gl.pack(gl.Notification(2, bytes(20)))[:-5], b""], "link"),  # truncated
    ],
)
async def test_client_drops_a_peripheral_that_sends_garbage(
    frames: list[bytes], phase: str
) -> None:
    server, address = await _fake_peripheral(frames)
    lost = asyncio.Event()
    client = make_client(address, disconnected_callback=lambda _c: lost.set(), timeout=5)
    try:
        if phase == "connect":
            with pytest.raises(BleakError):
                await client.connect()
            assert not lost.is_set()  # never connected: no disconnected callback
        else:
            await client.connect()
            with pytest.raises(BleakError):  # the garbage answers this read
                await client.read_gatt_char(BATTERY_LEVEL)
            await asyncio.wait_for(lost.wait(), 5)
        assert not client.is_connected
    finally:
        await client.disconnect()
        server.close()
        await server.wait_closed()


async def test_connect_timeout_is_timeout_error() -> None:
    ended = asyncio.Event()

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()
        await writer.wait_closed()
        ended.set()

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    try:
        client = make_client(
            f"loopback://127.0.0.1:{server.sockets[0].getsockname()[1]}", timeout=0.2
        )
        with pytest.raises(TimeoutError):
            await client.connect()
        assert not client.is_connected
        await asyncio.wait_for(ended.wait(), 5)  # the client hung up: the device sees the end
    finally:
        server.close()
        await server.wait_closed()


# -- concurrency ------------------------------------------------------------------------------
async def test_concurrent_operations_on_one_link_each_get_their_own_answer(device: Device) -> None:
    async with make_client(device.address) as client:
        got: list[bytearray] = []
        await client.start_notify(EVT, lambda _c, d: got.append(d))
        reads = [client.read_gatt_char(SERIAL) for _ in range(50)]
        writes = [client.write_gatt_char(CMD, b"w%02d" % i, response=True) for i in range(50)]
        results = await asyncio.gather(*reads, *writes)
        assert all(r.startswith(b"SN-") for r in results[:50])
        assert sorted(got) == sorted(b"ack:w%02d" % i for i in range(50))


async def test_many_clients_at_once(device: Device) -> None:
    async def session(i: int) -> bytes:
        async with make_client(device.address) as client:
            await client.write_gatt_char(CMD, b"c%d" % i, response=True)
            return bytes(await client.read_gatt_char(SERIAL))

    serials = await asyncio.gather(*(session(i) for i in range(20)))
    assert len(set(serials)) == 20  # each link is its own connection
    assert sorted(w for _, w in device.writes) == sorted(b"c%d" % i for i in range(20))
    await _until(lambda: not device.server.connections, "all links closed")


# -- bleak-retry-connector (pyNukiBT connects this way) ---------------------------------------
async def test_establish_connection_works_with_the_loopback_backend(device: Device) -> None:
    ble_device = await find_device(device.address, timeout=5)
    assert ble_device is not None
    lost: list[BleakClient] = []
    client = await establish_connection(
        BleakClientWithServiceCache,
        ble_device,
        "test-lock",
        disconnected_callback=lost.append,
        max_attempts=2,
        backend=client_backend_for(ble_device),
    )
    try:
        assert client.is_connected
        assert await client.read_gatt_char(BATTERY_LEVEL) == b"\x64"
    finally:
        await client.disconnect()
    assert lost == [client]


async def test_establish_connection_gives_up_on_a_refusing_device(device: Device) -> None:
    from bleak_retry_connector import BleakConnectionError, BleakNotFoundError

    ble_device = await find_device(device.address, timeout=5)
    assert ble_device is not None
    device.server.faults.apply("refuse", True)
    with pytest.raises((BleakConnectionError, BleakNotFoundError)):
        await establish_connection(
            BleakClientWithServiceCache,
            ble_device,
            "test-lock",
            max_attempts=1,
            backend=LoopbackClientBackend,
        )


async def test_reconnect_right_after_a_failed_send_is_not_torn_down_by_the_old_link(
    device: Device,
) -> None:
    lost: list[BleakClient] = []
    client = make_client(device.address, disconnected_callback=lost.append)
    await client.connect()
    device.server.faults.apply("drop")
    with contextlib.suppress(BleakError):
        for _ in range(100):  # until the drop is noticed, by the reader or by a send
            await client.write_gatt_char(CMD, b"x", response=False)
            await asyncio.sleep(0.005)
    assert not client.is_connected
    await client.connect()
    await asyncio.sleep(0.05)  # let any stale reader of the first link run
    assert client.is_connected
    assert await client.read_gatt_char(BATTERY_LEVEL) == b"\x64"
    await client.disconnect()
    assert lost == [client, client]
