#!/usr/bin/env python3
"""Write shared/src/domain/zones.txt: every IANA time zone name with its POSIX TZ rule (the
footer of its TZif file), from the system's zoneinfo. Schedules only look forward, so the rule in
force today is what they need. A zone whose changes no rule can say (Morocco's, around Ramadan)
also gets its listed changes from 2024 on: `|<unix time>:<offset seconds>,...`, followed until
the last, the rule after it. Run again when the time-zone database changes.

    python3 infra/zones.py /usr/share/zoneinfo > shared/src/domain/zones.txt
"""
import os
import struct
import sys

FROM = 1704067200  # 2024-01-01T00:00:00Z
FAT_END = 2147483647  # where files list every change that a rule also says


def explicit_changes(data):
    """The v2 block's transitions as (time, utc offset)."""
    def counts(off):
        return struct.unpack(">6l", data[off + 20 : off + 44])
    isutc, isstd, leap, timecnt, typecnt, charcnt = counts(0)
    v1 = 44 + timecnt * 5 + typecnt * 6 + charcnt + leap * 8 + isstd + isutc
    isutc, isstd, leap, timecnt, typecnt, charcnt = counts(v1)
    p = v1 + 44
    times = struct.unpack(f">{timecnt}q", data[p : p + 8 * timecnt])
    p += 8 * timecnt
    idx = data[p : p + timecnt]
    p += timecnt
    types = [struct.unpack(">lBB", data[p + 6 * i : p + 6 * i + 6])[0] for i in range(typecnt)]
    return [(t, types[i]) for t, i in zip(times, idx)]


root = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/zoneinfo"
rows = {}
for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = [d for d in dirnames if d not in ("posix", "right")]
    for f in filenames:
        path = os.path.join(dirpath, f)
        with open(path, "rb") as fh:
            data = fh.read()
        if not data.startswith(b"TZif") or data[4:5] < b"2" or not data.endswith(b"\n"):
            continue
        footer = data[data.rindex(b"\n", 0, len(data) - 1) + 1 : -1].decode()
        name = os.path.relpath(path, root)
        if name in ("posixrules", "localtime") or not footer:
            continue
        changes = explicit_changes(data)
        if changes and changes[-1][0] > FAT_END:
            listed = ",".join(f"{t}:{o}" for t, o in changes if t >= FROM)
            footer += "|" + listed
        rows[name] = footer
for name in sorted(rows):
    print(f"{name} {rows[name]}")
