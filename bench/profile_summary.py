#!/usr/bin/python3
"""Self time per operator from a Chrome trace written by embed_bench --profile (LibTorch's
profiler): for each thread, an event's self time is its duration less that of the events
nested directly inside it. Prints the operators that took the most, with their share of
the traced time, and the share of the convolutions (forward and backward) in all.

  bench/profile_summary.py TRACE.json [--top 20]
"""
import argparse
import collections
import json
import re


def load(path):
    text = open(path).read().strip()
    text = re.sub(r",\s*\]\s*$", "]", text)  # the writer may leave a comma before ']'
    if not text.endswith("]"):
        text = text.rstrip(",") + "]"
    return [e for e in json.loads(text) if e.get("ph") == "X"]


def self_times(events):
    by_thread = collections.defaultdict(list)
    for e in events:
        by_thread[(e.get("pid"), e.get("tid"))].append(e)
    self_us = collections.Counter()
    calls = collections.Counter()
    wall = 0.0
    for evs in by_thread.values():
        evs.sort(key=lambda e: (e["ts"], -e["dur"]))
        stack = []  # [end, name, child_us]
        for e in evs:
            start, end = e["ts"], e["ts"] + e["dur"]
            while stack and stack[-1][0] <= start:
                done = stack.pop()
                self_us[done[1]] += done[3] - done[2]
            if stack:
                stack[-1][2] += e["dur"]
            else:
                wall += e["dur"]
            stack.append([end, e["name"], 0.0, e["dur"]])
            calls[e["name"]] += 1
        while stack:
            done = stack.pop()
            self_us[done[1]] += done[3] - done[2]
    return self_us, calls, wall


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("trace")
    p.add_argument("--top", type=int, default=20)
    a = p.parse_args()
    self_us, calls, wall = self_times(load(a.trace))
    total = sum(self_us.values())
    conv = sum(v for k, v in self_us.items() if "conv" in k)
    print("traced self time %.1f ms over all threads; convolutions (forward + backward) %.1f%%"
          % (total / 1000, 100 * conv / max(total, 1e-9)))
    print("| operator | calls | self ms | share |")
    print("|---|---:|---:|---:|")
    for name, us in self_us.most_common(a.top):
        print("| %s | %d | %.2f | %.1f%% |" % (name, calls[name], us / 1000, 100 * us / max(total, 1e-9)))


if __name__ == "__main__":
    main()
