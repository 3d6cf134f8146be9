#!/usr/bin/env python3
"""Per-request instructions by function: (I(N2) - I(N1)) / (N2 - N1) for each function.

Usage: bench/cgdiff.py OUT_N1 OUT_N2 N1 N2 [--inclusive] [--top 40]
where OUT_* are callgrind files (thread 1) of bench/layer.sh, e.g.
bench/out/callgrind/latchkey-1000/callgrind.out-01.
"""
import re
import subprocess
import sys


def costs(path, inclusive):
    args = ["callgrind_annotate", "--auto=no", "--threshold=100", f"--inclusive={'yes' if inclusive else 'no'}", path]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    result = {}
    for line in out.splitlines():
        m = re.match(r"^\s*([\d,]+) \([ \d.]+%\)\s+(.*?)(?: \[.*\])?$", line)
        if not m or "PROGRAM TOTALS" in line:
            continue
        name = re.sub(r" \([\d,]+x\)$", "", m.group(2).strip())
        name = name.split(":", 1)[1] if ":" in name and not name.startswith("0x") else name
        result[name] = result.get(name, 0) + int(m.group(1).replace(",", ""))
    return result


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    print("per request, " + ("inclusive" if "--inclusive" in sys.argv else "self") + " cost")
    inclusive = "--inclusive" in sys.argv
    top = 40
    if "--top" in sys.argv:
        top = int(sys.argv[sys.argv.index("--top") + 1])
        args.remove(str(top))
    a, b, n1, n2 = args[0], args[1], int(args[2]), int(args[3])
    ca, cb = costs(a, inclusive), costs(b, inclusive)
    diff = {k: (cb.get(k, 0) - ca.get(k, 0)) / (n2 - n1) for k in set(ca) | set(cb)}
    for name, per in sorted(diff.items(), key=lambda kv: -abs(kv[1]))[:top]:
        print(f"{per:9.1f}  {name[:170]}")


main()
