"""Ctrl-C (SIGINT) during a call on the main thread ends that call promptly
with KeyboardInterrupt; calls on other threads run on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

CHILD = textwrap.dedent(
    """
    import signal, sys, threading, time
    import astrid

    action, mode = sys.argv[2], sys.argv[3]
    if mode == "ignore":
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    else:
        # A shell that starts a job in the background hands it SIGINT
        # ignored, and Python then keeps it so: install the usual handler.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    rt = astrid.Runtime(timeout_ms=30_000 if mode != "ignore" else 1500, fuel=1 << 60)
    hostile = rt.load(sys.argv[1] + "/hostile")

    def background():
        try:
            hostile.call("sleep", timeout=1.5)
            print("background ok", flush=True)
        except astrid.DeadlineExceededError:
            print("background ok", flush=True)
        except BaseException as e:
            print("background", type(e).__name__, flush=True)

    t = threading.Thread(target=background)
    t.start()
    time.sleep(0.1)
    print("ready", flush=True)
    started = time.monotonic()
    try:
        hostile.call(action)
        print("returned", flush=True)
    except KeyboardInterrupt:
        print(f"KeyboardInterrupt after {time.monotonic() - started:.2f}", flush=True)
    except astrid.AstridError as e:
        print("error", type(e).__name__, flush=True)
    t.join()
    rt.close()
    """
)


def run_child(capsules, action: str, mode: str) -> tuple:
    env = dict(os.environ)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(capsules), action, mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line.strip() == "ready", line + child.stderr.read()
    time.sleep(0.2)
    sent = time.monotonic()
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=30)
    return out, err, child.returncode, sent


@pytest.mark.parametrize("action", ["loop", "sleep"])
def test_ctrl_c_ends_the_main_threads_call_only(capsules, action: str) -> None:
    out, err, code, _ = run_child(capsules, action, "default")
    assert code == 0, out + err
    lines = out.splitlines()
    interrupted = [line for line in lines if line.startswith("KeyboardInterrupt after")]
    assert interrupted, out + err
    # Sent 0.2 s after "ready": the call ended well under a second later.
    assert float(interrupted[0].split()[-1]) < 0.9, out
    assert "background ok" in lines, out + err


def test_an_ignored_sigint_cancels_nothing(capsules) -> None:
    out, err, code, _ = run_child(capsules, "loop", "ignore")
    assert code == 0, out + err
    assert "error DeadlineExceededError" in out.splitlines(), out + err
    assert "background ok" in out.splitlines(), out + err


def test_reinstalling_keeps_one_watcher_and_passes_bytes_on(capsules) -> None:
    """install() again (as after another library replaced the wakeup fd)
    reuses the one socket pair: no descriptor is freed under the handler."""
    script = textwrap.dedent(
        """
        import signal, socket, threading
        import astrid
        from astrid import interrupts
        signal.signal(signal.SIGINT, signal.default_int_handler)
        rt = astrid.Runtime()
        hello = rt.load(__import__("sys").argv[1] + "/hello")
        hello.call("noop")
        first = interrupts._pair[0]
        assert first is not None
        other_r, other_w = socket.socketpair()
        other_w.setblocking(False)
        signal.set_wakeup_fd(other_w.fileno(), warn_on_full_buffer=False)
        assert interrupts.install()
        assert interrupts._pair[0] is first
        assert interrupts._previous[0] == other_w.fileno()
        assert interrupts.install()
        assert interrupts._previous[0] == other_w.fileno()
        watchers = [t for t in threading.enumerate() if t.name == "astrid-sigint"]
        assert len(watchers) == 1, watchers
        print("ok")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(capsules)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stdout + out.stderr
