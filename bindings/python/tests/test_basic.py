"""Load and call: results, options, metadata, load_bytes, secrets."""

from __future__ import annotations

import astrid
import pytest


def test_library_version_and_abi() -> None:
    assert astrid.abi_version() == astrid.ABI_VERSION == 2
    assert astrid.version().count(".") >= 2
    assert astrid.library().path.endswith("libastrid.so")


def test_load_and_call_greet(hello: astrid.Capsule) -> None:
    result = hello.call("greet", b'{"name":"Python"}')
    assert result.action == "final"
    data = result.json()
    assert data["message"] == "Hello, Python!"
    assert data["principal"] == "alice"
    assert data["nonce_bytes"] == 4


def test_payload_types_and_empty_data(hello: astrid.Capsule) -> None:
    assert hello.call("echo", "text payload").data == "text payload"
    assert hello.call("echo", bytearray(b"from a bytearray")).data == "from a bytearray"
    assert hello.call("echo", memoryview(b"a view")).data == "a view"
    assert hello.call("echo-len", b"x" * 4096).data == "4096"
    noop = hello.call("noop", b"x" * 64)
    assert noop.action == "continue"
    assert noop.data is None
    assert noop.json() is None
    assert "continue" in repr(noop)


def test_metadata(hello: astrid.Capsule) -> None:
    assert hello.name == "hello"
    assert len(hello.id) == 36 and hello.id.count("-") == 4
    assert not hello.has_capability("net")
    assert not hello.closed
    assert "hello" in repr(hello)


def test_call_options_principal_and_config(hello: astrid.Capsule) -> None:
    data = hello.call("greet", b'{"name":"x"}', principal="dora").json()
    assert data["principal"] == "dora"
    data = hello.call("greet", b'{"name":"x"}', config={"GREETING": "Howdy"}).json()
    assert data["message"] == "Howdy, x!"
    # Without options the owner and the manifest default apply again.
    data = hello.call("greet", b'{"name":"x"}').json()
    assert data["message"] == "Hello, x!" and data["principal"] == "alice"


def test_load_time_config(rt: astrid.Runtime, capsules) -> None:
    with rt.load(capsules / "hello", config={"GREETING": "Ahoy"}) as capsule:
        assert capsule.call("greet", b'{"name":"y"}').json()["message"] == "Ahoy, y!"


def test_load_bytes(rt: astrid.Runtime, capsules) -> None:
    wasm = (capsules / "hello" / "hello.wasm").read_bytes()
    manifest = '[package]\nname = "hello-bytes"\nversion = "1.0.0"\n\n[env.GREETING]\ndefault = "Hi"\n'
    with rt.load_bytes(wasm, manifest) as capsule:
        assert capsule.name == "hello-bytes"
        assert capsule.call("greet", b'{"name":"z"}').json()["message"] == "Hi, z!"


def test_results_outlive_their_capsule(rt: astrid.Runtime, capsules) -> None:
    capsule = rt.load(capsules / "hello")
    result = capsule.call("echo", b"kept")
    capsule.close()
    assert result.data == "kept" and result.action == "continue"


def test_secret_provider(rt: astrid.Runtime, capsules) -> None:
    asked = []

    def provide(request: astrid.SecretRequest):
        asked.append(request)
        return "py-secret" if request.key == "TOKEN" else None

    rt.set_secret_provider(provide)
    with rt.load(capsules / "probe", config={"REQUIRED": "yes"}, principal="erin") as probe:
        assert probe.call("config:TOKEN").data == "some:py-secret"
        assert asked[-1].key == "TOKEN" and asked[-1].capsule == "probe" and asked[-1].capsule_id == probe.id
        rt.set_secret_provider(None)
        assert probe.call("config:TOKEN").data == "none"
    assert len(asked) == 1


def test_raising_secret_provider_fails_the_lookup(rt: astrid.Runtime, capsules) -> None:
    def provide(request: astrid.SecretRequest) -> str:
        raise KeyError("vault is sealed")

    rt.set_secret_provider(provide)
    with rt.load(capsules / "probe", config={"REQUIRED": "yes"}) as probe:
        answer = probe.call("config:TOKEN").data
        assert answer is not None and answer.startswith("err:")
        assert probe.call("config:REQUIRED").data == "some:yes"  # still serving
    errors = rt.take_callback_errors()
    assert len(errors) == 1 and isinstance(errors[0], KeyError)


def test_refused_secret_value_is_reported_with_the_library_message(rt: astrid.Runtime, capsules) -> None:
    # A value that is not UTF-8: the library refuses it (astrid_secret_request_set_value
    # now reports why), the lookup fails, and the exception carries that message.
    rt.set_secret_provider(lambda request: b"\xff\xfe")
    with rt.load(capsules / "probe", config={"REQUIRED": "yes"}) as probe:
        answer = probe.call("config:TOKEN").data
        assert answer is not None and answer.startswith("err:")
    errors = rt.take_callback_errors()
    assert len(errors) == 1 and isinstance(errors[0], astrid.Utf8Error)
    assert "`value` is not valid UTF-8" in errors[0].message


def test_cancel_from_another_thread(capsules) -> None:
    import threading

    with astrid.Runtime(timeout_ms=20_000, fuel=1 << 50) as rt, rt.load(capsules / "hostile") as hostile:
        timer = threading.Timer(0.2, hostile.cancel)
        timer.start()
        with pytest.raises(astrid.CancelledError) as info:
            hostile.call("loop")
        timer.join()
        assert info.value.code == -9
        assert hostile.call("ok").data == "harmless"


def test_result_data_with_embedded_nul(hello: astrid.Capsule) -> None:
    assert hello.call("echo", b"a\0b").data == "a\x00b"


def test_one_result_read_from_many_threads(hello: astrid.Capsule) -> None:
    import threading

    for _ in range(20):
        result = hello.call("echo", b"shared")
        barrier = threading.Barrier(8)
        seen = []

        def read() -> None:
            barrier.wait()
            seen.append((result.action, result.data))

        threads = [threading.Thread(target=read) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert seen == [("continue", "shared")] * 8


def test_result_is_opaque(hello: astrid.Capsule) -> None:
    result = hello.call("noop")
    with pytest.raises(AttributeError):
        result.value
    import pickle

    with pytest.raises(TypeError):
        pickle.dumps(result)
