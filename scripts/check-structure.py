#!/usr/bin/env python3
"""Structural rules `make lint` enforces, so they hold after the review that set them:

- no import cycle between the modules of any crate (a cycle means two modules are one concept
  split in two, or one reaches into the other's business);
- no source file over 500 lines (readable in one sitting);
- no function in device/ or gateway/ over 100 lines, except `main`.

Module references are read from `crate::…` and `super::…` paths outside comments and outside
`#[cfg(test)]` modules (tests may look anywhere). A child using its parent (`super::Shared`) is
not a cycle: the parent owns the child. This is a text scan, not a compiler pass, and errs on
the side of reporting.
"""

import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CRATES = ["protocol", "mqtt", "stamp-gst", "device", "gateway", "tests"]
MAX_FILE_LINES = 500
MAX_FN_LINES = 100
FN_RULE_CRATES = ["device", "gateway"]


def rust_files(top):
    for folder, _, names in os.walk(top):
        for name in names:
            if name.endswith(".rs"):
                yield os.path.join(folder, name)


def module_of(src, path):
    parts = os.path.relpath(path, src)[:-3].split("/")
    if parts[-1] in ("mod", "main", "lib"):
        parts = parts[:-1]
    return tuple(parts)


def code_only(text):
    text = re.sub(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{.*", "", text, flags=re.S)
    return re.sub(r"//.*", "", text)


def resolve(path, modules):
    """The longest prefix of `path` that names a module."""
    for n in range(len(path), 0, -1):
        if tuple(path[:n]) in modules:
            return tuple(path[:n])
    return None


def module_graph(src):
    files = {module_of(src, p): p for p in rust_files(src)}
    graph = {m: set() for m in files}
    for module, path in files.items():
        if "test" in os.path.basename(path):
            continue
        text = code_only(open(path, encoding="utf-8").read())
        is_mod_file = os.path.basename(path) in ("mod.rs", "main.rs", "lib.rs")
        parent = list(module) if is_mod_file else list(module[:-1])
        refs = [r.strip(":").split("::") for r in re.findall(r"\bcrate((?:::\w+)+)", text)]
        refs += [parent[:-1] + r.strip(":").split("::") if is_mod_file else parent + r.strip(":").split("::")
                 for r in re.findall(r"\bsuper((?:::\w+)+)", text)]
        for ref in refs:
            target = resolve(ref, files)
            owns_us = target is not None and module[: len(target)] == target
            if target and target != module and not owns_us:
                graph[module].add(target)
    return graph


def cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return found


def long_functions(path):
    """(name, first line, length) of every function over the limit: braces counted on code
    with strings, chars and comments blanked."""
    lines = open(path, encoding="utf-8").read().split("\n")
    found = []
    for i, line in enumerate(lines):
        m = re.match(r"\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?fn\s+(\w+)", line)
        if not m:
            continue
        depth, started, j = 0, False, i
        while j < len(lines):
            code = re.sub(r'"([^"\\]|\\.)*"', '""', lines[j])
            code = re.sub(r"'([^'\\]|\\.)'", "", re.sub(r"//.*", "", code))
            for c in code:
                if c == "{":
                    depth, started = depth + 1, True
                elif c == "}":
                    depth -= 1
            if (started and depth <= 0) or (not started and code.strip().endswith(";")):
                break
            j += 1
        if j - i + 1 > MAX_FN_LINES:
            found.append((m.group(6), i + 1, j - i + 1))
    return found


def main():
    problems = []
    for crate in CRATES:
        src = os.path.join(ROOT, crate, "src")
        for component in cycles(module_graph(src)):
            names = " ⇄ ".join("/".join(m) or "<root>" for m in component)
            problems.append(f"{crate}: import cycle {names}")
    for crate in CRATES + ["fuzz/fuzz_targets"]:
        for path in rust_files(os.path.join(ROOT, crate)):
            n = sum(1 for _ in open(path, encoding="utf-8"))
            if n > MAX_FILE_LINES:
                problems.append(f"{os.path.relpath(path, ROOT)}: {n} lines (limit {MAX_FILE_LINES})")
    for crate in FN_RULE_CRATES:
        for path in rust_files(os.path.join(ROOT, crate, "src")):
            for name, line, n in long_functions(path):
                if name != "main":
                    rel = os.path.relpath(path, ROOT)
                    problems.append(f"{rel}:{line}: fn {name} is {n} lines (limit {MAX_FN_LINES})")
    for problem in problems:
        print(problem)
    if problems:
        sys.exit(1)
    print("structure: no import cycles, no file over 500 lines, no function over 100 lines")


if __name__ == "__main__":
    main()
