#!/usr/bin/env python3
"""Summarize a py-spy raw (collapsed) profile: per thread, the share of samples in each function.

    scripts/bench/stacks.py PROFILE.txt [--top N] [--leaf]

Inclusive by default (a function counts when it is anywhere on the stack); --leaf counts only
the innermost frame (where the time is actually spent, waiting included with py-spy --idle).
"""

import argparse
import collections
import re


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("profile")
    p.add_argument("--top", type=int, default=12)
    p.add_argument("--leaf", action="store_true")
    args = p.parse_args()
    per_thread: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    totals: collections.Counter = collections.Counter()
    for line in open(args.profile):
        stack, _, count = line.rstrip("\n").rpartition(" ")
        frames = stack.split(";")
        thread = re.sub(r"\(?0x[0-9a-f]+\)?|\d+", "", frames[0]).strip() or frames[0]
        funcs = [re.sub(r" \(.*?\)$", "", f) + " " + (re.search(r"\((.*?)\)$", f) or [""])[0]
                 .replace("(", "").replace(")", "").split("/")[-1] for f in frames[1:]]
        totals[thread] += int(count)
        for f in ([funcs[-1]] if args.leaf and funcs else set(funcs)):
            per_thread[thread][f] += int(count)
    for thread, counter in sorted(per_thread.items(), key=lambda kv: -totals[kv[0]]):
        print(f"== {thread}: {totals[thread]} samples")
        for func, n in counter.most_common(args.top):
            print(f"  {n / totals[thread]:6.1%}  {func}")


if __name__ == "__main__":
    main()
