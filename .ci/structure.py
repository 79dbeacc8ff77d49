#!/usr/bin/env python3
"""Structure checks CI runs (issue 13):

1. No cycle between the top-level modules of src/ (`crate::a` used in src/b and
   `crate::b` used in src/a, or longer rings). Module = first path segment after `crate::`.
2. No non-test function in src/outbound, src/inbound, src/spool or src/policy longer than
   MAX_LINES lines (signature to closing brace); the longest five are printed either way.

Test code (`#[cfg(test)] mod ... { }`) is skipped. Exit 1 on a violation.
"""
import pathlib
import re
import sys

SRC = pathlib.Path(__file__).resolve().parent.parent / "src"
MAX_LINES = 60
HOT = ("outbound", "inbound", "spool", "policy")


def strip(text):
    """Text with comments, strings and char literals blanked, line breaks kept."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:i + 10]) and not text[i - 1:i].isalnum() and text[i - 1:i] != "_":
            hashes = re.match(r"r(#*)\"", text[i:]).group(1)
            end = '"' + hashes
            j = text.find(end, i + 2 + len(hashes))
            j = n if j < 0 else j + len(end)
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "'" and re.match(r"'(\\.|[^\\'])'|'\\u\{[0-9a-fA-F]+\}'|'\\x[0-9a-fA-F]{2}'", text[i:i + 12]):
            m = re.match(r"'(\\.|[^\\'])'|'\\u\{[0-9a-fA-F]+\}'|'\\x[0-9a-fA-F]{2}'", text[i:i + 12])
            out.append(" " * len(m.group(0)))
            i += len(m.group(0))
        else:
            out.append(c)
            i += 1
    return "".join(out)


def block_end(text, open_at):
    depth = 0
    for k in range(open_at, len(text)):
        if text[k] == "{":
            depth += 1
        elif text[k] == "}":
            depth -= 1
            if depth == 0:
                return k
    return len(text) - 1


def without_tests(text):
    """Blank `#[cfg(test)]` items (a test module or function)."""
    while True:
        m = re.search(r"#\[cfg\(test\)\]", text)
        if not m:
            return text
        brace = text.find("{", m.end())
        semi = text.find(";", m.end())
        if semi != -1 and (brace == -1 or semi < brace):
            end = semi
        else:
            end = block_end(text, brace)
        text = text[: m.start()] + re.sub(r"[^\n]", " ", text[m.start(): end + 1]) + text[end + 1:]


def module_of(path):
    rel = path.relative_to(SRC)
    top = rel.parts[0]
    return top[:-3] if top.endswith(".rs") else top


def cycles(files):
    modules = {module_of(p) for p in files} - {"lib", "main"}
    deps = {}
    for path, text in files.items():
        mod = module_of(path)
        if mod in ("lib", "main"):
            continue
        for used in re.findall(r"\bcrate::([a-z_][a-z0-9_]*)", text):
            if used != mod and used in modules:
                deps.setdefault(mod, set()).add(used)
        # `use crate::{a, b::c}` groups.
        for group in re.findall(r"\bcrate::\{([^}]*)\}", text):
            for used in re.findall(r"(?:^|,)\s*([a-z_][a-z0-9_]*)", group):
                if used != mod and used in modules:
                    deps.setdefault(mod, set()).add(used)
    found, state = [], {}

    def visit(m, stack):
        state[m] = "active"
        stack.append(m)
        for d in sorted(deps.get(m, ())):
            if state.get(d) == "active":
                found.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d, stack)
        stack.pop()
        state[m] = "done"

    for m in sorted(deps):
        if m not in state:
            visit(m, [])
    return deps, found


def long_functions(files):
    out = []
    for path, text in files.items():
        if module_of(path) not in HOT:
            continue
        text = without_tests(text)
        for m in re.finditer(r"\bfn\s+([a-zA-Z_][a-zA-Z0-9_]*)", text):
            brace = text.find("{", m.end())
            semi = text.find(";", m.end())
            if brace == -1 or (semi != -1 and semi < brace):
                continue  # a trait method without a body
            end = block_end(text, brace)
            start_line = text.count("\n", 0, m.start()) + 1
            end_line = text.count("\n", 0, end) + 1
            out.append((end_line - start_line + 1, f"{path.relative_to(SRC.parent)}:{start_line}", m.group(1)))
    out.sort(reverse=True)
    return out


def main():
    files = {p: strip(p.read_text()) for p in sorted(SRC.rglob("*.rs"))}
    ok = True
    deps, found = cycles(files)
    if found:
        ok = False
        for ring in found:
            print("structure: module cycle: " + " -> ".join(ring))
    else:
        print(f"structure: no module cycle among {len(deps)} modules")
    longest = long_functions(files)
    print(f"structure: longest functions in src/{{{','.join(HOT)}}} (limit {MAX_LINES} lines):")
    for lines, where, name in longest[:5]:
        print(f"  {lines:4} {name} ({where})")
    over = [f for f in longest if f[0] > MAX_LINES]
    if over:
        ok = False
        print(f"structure: {len(over)} function(s) over {MAX_LINES} lines")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
