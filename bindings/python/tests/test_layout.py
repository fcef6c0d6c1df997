"""The ctypes mirrors match astrid.h byte for byte (compiled against the header)."""

from __future__ import annotations

import ctypes
import re
import pathlib
import shutil
import subprocess

import pytest
from astrid import _native

STRUCTS = {
    "astrid_config_entry_t": _native.ConfigEntry,
    "astrid_load_options_t": _native.LoadOptions,
    "astrid_call_options_t": _native.CallOptions,
    "astrid_gate_request_info_t": _native.GateRequestInfo,
    "astrid_runtime_config_t": _native.RuntimeConfig,
    "astrid_log_record_t": _native.LogRecordStruct,
    "astrid_audit_event_t": _native.AuditEventStruct,
    "astrid_secret_request_info_t": _native.SecretRequestInfo,
    "astrid_vfs_stat_t": _native.VfsStatStruct,
    "astrid_vfs_ops_t": _native.VfsOps,
    "astrid_message_t": _native.MessageStruct,
    "astrid_kv_namespace_t": _native.KvNamespaceStruct,
    "astrid_kv_ops_t": _native.KvOps,
    "astrid_accept_request_info_t": _native.AcceptRequestInfo,
    "astrid_usage_t": _native.UsageStruct,
    "astrid_load_vfs_t": _native.LoadVfs,
    "astrid_capsule_stats_t": _native.CapsuleStatsStruct,
    "astrid_runtime_stats_t": _native.RuntimeStatsStruct,
}


def test_struct_layouts_match_the_header(include_dir: pathlib.Path, tmp_path: pathlib.Path) -> None:
    header = include_dir / "astrid.h"
    assert header.exists(), f"no header at {header}"
    text = header.read_text()
    missing = [name for name in STRUCTS if f"}} {name};" not in text]
    assert not missing, f"{header} lacks {missing}: the binding needs exactly this header's structs"
    present = STRUCTS
    lines = ['#include <stdio.h>', '#include <stddef.h>', '#include "astrid.h"', "int main(void) {"]
    for name, cls in present.items():
        lines.append(f'printf("{name} size %zu\\n", sizeof({name}));')
        for field, *_ in cls._fields_:
            if re.search(rf"[\s*]{field}(\[\d+\])?;|\(\*{field}\)", _struct_body(text, name)):
                lines.append(f'printf("{name}.{field} %zu\\n", offsetof({name}, {field}));')
    lines += ["return 0;", "}"]
    (tmp_path / "layout.c").write_text("\n".join(lines))
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.fail("a C compiler is needed for the layout check")
    exe = tmp_path / "layout"
    subprocess.run([cc, "-I", str(include_dir), "-o", str(exe), str(tmp_path / "layout.c")], check=True)
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split("\n")
    c_values = dict(line.rsplit(" ", 1) for line in out if line)
    checked = 0
    for name, cls in present.items():
        fields = {f for f, *_ in cls._fields_}
        for key, value in c_values.items():
            if key == f"{name} size":
                assert int(value) == ctypes.sizeof(cls), key
                checked += 1
            elif key.startswith(f"{name}."):
                field = key.split(".", 1)[1]
                assert field in fields
                assert int(value) == getattr(cls, field).offset, key
                checked += 1
    # every C field must be mirrored: count fields in the header bodies
    for name, cls in present.items():
        mirrored = sum(1 for k in c_values if k.startswith(f"{name}."))
        declared = _count_fields(_struct_body(text, name))
        assert mirrored == declared, f"{name}: header has {declared} fields, mirror covers {mirrored}"
    assert checked > 100


def _struct_body(text: str, name: str) -> str:
    end = text.index(f"}} {name};")
    start = text.rindex("typedef struct", 0, end)
    return text[start:end]


def _count_fields(body: str) -> int:
    code = "\n".join(line.split("//")[0] for line in body.split("\n")[1:])
    return code.count(";")


def test_every_struct_of_the_header_is_mirrored(include_dir: pathlib.Path) -> None:
    """A struct added to the header cannot go unnoticed (a field added to
    one fails the field count above)."""
    text = (include_dir / "astrid.h").read_text()
    declared = set(re.findall(r"typedef struct (\w+) \{", text))
    assert {"astrid_runtime_config_t", "astrid_kv_ops_t", "astrid_load_options_t"} <= declared
    assert declared == set(STRUCTS), f"not mirrored: {sorted(declared - set(STRUCTS))}"
