"""The astrid demo in Python: start a runtime, load the `hello` capsule
directory, call its `greet` action, print the result and the capsule's log
lines (what examples/c/hello.c does).

    usage: python hello.py [CAPSULE_DIR] [NAME]   (default: build/capsules/hello, "Python")
"""

from __future__ import annotations

import json
import sys

import astrid


def on_log(record: astrid.LogRecord) -> None:
    # Runs on the thread executing the guest.
    print(f"  [{record.level.name.lower()}] {record.capsule}: {record.message}")


def main(argv: list) -> int:
    directory = argv[1] if len(argv) > 1 else "build/capsules/hello"
    name = argv[2] if len(argv) > 2 else "Python"
    print(f"astrid {astrid.version()} (ABI {astrid.abi_version()})")
    try:
        with astrid.Runtime() as rt:
            rt.set_log_callback(on_log)
            with rt.load(directory, principal="alice") as capsule:
                print(f"loaded capsule {capsule.name} (id {capsule.id})")
                payload = json.dumps({"name": name}, separators=(",", ":"))
                print(f"calling greet with {payload}")
                result = capsule.call("greet", payload)
                data = f" data={result.data}" if result.data is not None else ""
                print(f"result: action={result.action}{data}")
    except astrid.AstridError as e:
        print(f"failed ({e.code}): {e.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
