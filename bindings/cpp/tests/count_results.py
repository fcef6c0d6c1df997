#!/usr/bin/env python3
"""Counts GoogleTest results: `count_results.py XML_DIR CTEST_LOG` prints "PASSED FAILED SKIPPED".

Every gtest XML report in XML_DIR contributes the test cases it ran. A test that ctest
reports as failed without a gtest XML entry for it (the process crashed
before writing its report) counts as failed too.
"""
import glob
import re
import sys
import xml.etree.ElementTree as ET

xml_dir, ctest_log = sys.argv[1], sys.argv[2]
outcome = {}  # "Suite.Name" -> passed / failed / skipped
for path in glob.glob(f"{xml_dir}/*.xml"):
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError:
        continue  # a process that crashed while writing its report: ctest's log below counts it
    for case in root.iter("testcase"):
        if case.get("status") is None:
            continue  # a --gtest_list_tests listing (ctest's test discovery), not a run
        name = f"{case.get('classname')}.{case.get('name')}"
        if case.find("failure") is not None or case.find("error") is not None:
            outcome[name] = "failed"
        elif case.get("result") == "skipped" or case.find("skipped") is not None or case.get("status") == "notrun":
            outcome.setdefault(name, "skipped")
        else:
            outcome.setdefault(name, "passed")

# ctest's summary lists failures after "The following tests FAILED:" as
# "  12 - Suite.Name (Failed)" / "(SEGFAULT)" / "(Timeout)" / "(Not Run)".
with open(ctest_log, encoding="utf-8", errors="replace") as log:
    in_failed = False
    for line in log:
        if line.startswith("The following tests FAILED:"):
            in_failed = True
            continue
        # Parameterized tests carry a comment: "37 - Suite.Name/0  # GetParam() = 0 (Failed)".
        m = re.match(r"\s*\d+ - (\S+).*\(([^()]+)\)\s*$", line)
        if in_failed and m and m.group(2) != "Disabled":
            outcome[m.group(1)] = "failed"

counts = {k: sum(1 for v in outcome.values() if v == k) for k in ("passed", "failed", "skipped")}
print(counts["passed"], counts["failed"], counts["skipped"])
