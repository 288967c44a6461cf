#!/usr/bin/env python3
"""Strong symbols that more than one shared library of a binary defines.

A process that loads PyPI's LibTorch beside Debian's libraries (gRPC, protobuf, OpenCV,
Abseil, OpenBLAS, ...) binds each dynamic symbol to its first definition in load order; a
function or object (`T`, `D`, `B`, `R`) defined with the same name in two libraries then
silently replaces the other one's. Template instantiations and inline functions (`W`,
`V`, `u`) are meant to merge and are not counted. Two copies of one runtime under
different file names (two OpenMP runtimes, say) show up here as well.

    duplicate_symbols.py BINARY --between REGEX [--allow REGEX ...]

Exits 1 and lists the clashes (which libraries, how many symbols, a few names) when a
symbol outside the allowed patterns is defined both by a library whose path matches
--between (the wheels') and by one whose path does not (the system's). Clashes among the
system's own libraries (OpenBLAS and LAPACK, libGL and libOpenGL, ...) are Debian's
packaging and are only counted.
"""
import argparse
import collections
import re
import subprocess
import sys


def closure(binary):
    libs = []
    for line in subprocess.run(["ldd", binary], capture_output=True, text=True,
                               check=True).stdout.splitlines():
        m = re.match(r"\s*(\S+) => (\S+) \(", line)
        if m:
            libs.append(m.group(2))
        elif "not found" in line:
            sys.exit(f"{binary}: {line.strip()}")
    return libs


def strong_symbols(lib):
    out = subprocess.run(["nm", "-D", "--defined-only", lib], capture_output=True,
                         text=True).stdout
    syms = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "TDBR":
            name = parts[2].split("@")[0]
            syms.add(name)
    return syms


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("binary")
    ap.add_argument("--between", required=True,
                    help="regex of the library paths on one side (the wheels')")
    ap.add_argument("--allow", action="append", default=[],
                    help="regex of symbol names that may be defined twice")
    args = ap.parse_args()
    allow = [re.compile(a) for a in args.allow]
    # Symbols every ELF object has, and the libc family's own versioned duplicates.
    always = re.compile(r"^(_init|_fini|_edata|_end|__bss_start|_IO_stdin_used)$")
    definers = collections.defaultdict(list)
    libs = closure(args.binary)
    for lib in libs:
        for s in strong_symbols(lib):
            definers[s].append(lib)
    side = re.compile(args.between)
    clashes = collections.defaultdict(list)
    among_system = 0
    for sym, where in definers.items():
        if len(where) < 2 or always.match(sym) or any(a.search(sym) for a in allow):
            continue
        ours = [w for w in where if side.search(w)]
        if ours and len(ours) < len(where):
            clashes[tuple(sorted(where))].append(sym)
        elif not ours:
            among_system += 1
    print(f"{args.binary}: {len(libs)} libraries ({sum(bool(side.search(l)) for l in libs)} "
          f"matching {args.between}), {len(definers)} strong symbols; {among_system} defined "
          f"twice among the others; {sum(map(len, clashes.values()))} between the two sides")
    for where, syms in sorted(clashes.items(), key=lambda kv: -len(kv[1])):
        print(f"  {len(syms)} defined in each of {', '.join(where)}: {', '.join(sorted(syms)[:6])}")
    return 1 if clashes else 0


if __name__ == "__main__":
    sys.exit(main())
