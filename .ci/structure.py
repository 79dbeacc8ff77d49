#!/usr/bin/env python3
"""Structure checks CI runs (issues 13 and 30), over all of src/ with test code skipped:

1. No cycle between the top-level modules of src/.
2. No function longer than MAX_FN lines (signature to closing brace), except LONG_FNS.
3. No file longer than MAX_FILE lines of non-test code, except BIG_FILES.
4. No circle between the files of one folder (`super::b` from a.rs and `super::a` from
   b.rs); a folder's mod.rs is its surface and is not part of the circle.
5. The arrows DESIGN.md says never point: NEVER[module] names what it must not use.
6. Nothing imports the crate root (`crate::x` where x is an item of lib.rs, not a module).

Every exception is listed below with its reason. `.ci/test_structure.py` plants a
violation of each rule in a copy of src/ and checks that this script refuses it.
Usage: structure.py [SRC_DIR]. Exit 1 on a violation.
"""
import pathlib
import re
import sys

SRC = pathlib.Path(__file__).resolve().parent.parent / "src"
MAX_FN = 60
MAX_FILE = 700

# "path:function" -> why it may be longer than MAX_FN lines. None today: a new entry needs
# its reason here, where the review sees it.
LONG_FNS = {
}

# path -> why it may hold more than MAX_FILE lines of non-test code. None today.
BIG_FILES = {
}

# The design's "never" arrows (DESIGN.md, Layout): module -> {module it must not use: why}.
TOP = {"admin": "admin is the top: only the crate's assembly and the command line use it",
       "cli": "cli is the top: only main.rs uses it"}
NEVER = {
    "proto": {"inbound": "proto knows no session", "outbound": "proto knows no session",
              "spool": "proto does no I/O", **TOP},
    "policy": {"outbound": "policy knows no delivery", "inbound": "policy knows no delivery",
               "spool": "policy knows no delivery", **TOP},
    "spool": {"outbound": "the spool knows no delivery", "inbound": "the spool knows no session",
              "policy": "the queue knows no policy: a fact of the envelope belongs below both",
              **TOP},
    "settings": {**TOP, "outbound": "settings know no delivery", "inbound": "settings know no session"},
    "inbound": {"outbound": "inbound and outbound meet only in the spool", **TOP},
    "outbound": {"inbound": "inbound and outbound meet only in the spool", **TOP},
}
# src/start.rs is the crate's assembly (what lib.rs's `prepare` and `run` open and start):
# it builds the admin state like everything else, so it may use every module.
NEVER["start"] = {}
# Every other module not named above still must not use admin or cli.
DEFAULT_NEVER = TOP
# I/O proto must not do (it is bytes in, values out, and fuzzed).
PROTO_IO = re.compile(r"\btokio::|\bstd::(?:net|fs)\b|\bstd::io::(?:Read|Write)\b")


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


def test_spans(text):
    """(start, end) offsets of the `#[cfg(test)]` items (a test module or function)."""
    spans, at = [], 0
    while True:
        m = re.compile(r"#\[cfg\(test\)\]").search(text, at)
        if not m:
            return spans
        brace = text.find("{", m.end())
        semi = text.find(";", m.end())
        if semi != -1 and (brace == -1 or semi < brace):
            end = semi
        else:
            end = block_end(text, brace)
        spans.append((m.start(), end + 1))
        at = end + 1


def without_tests(text):
    """Text with test items blanked, line breaks kept."""
    for start, end in test_spans(text):
        text = text[:start] + re.sub(r"[^\n]", " ", text[start:end]) + text[end:]
    return text


def module_path(path, src):
    """The module path of a file: src/a/b.rs -> [a, b]; src/a/mod.rs -> [a]; lib.rs -> []."""
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "mod" or parts == ["lib"] or parts == ["main"]:
        parts = parts[:-1]
    return parts


def expand(tree):
    """The paths of a `use` tree body: `a::{b, c::{d}}, e` -> [a::b, a::c::d, e]."""
    items, depth, cur = [], 0, ""
    for ch in tree:
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    items.append(cur)
    out = []
    for item in (i.strip() for i in items):
        m = re.match(r"((?:[A-Za-z_]\w*::)*)\{(.*)\}$", item, re.S)
        if m:
            out += [m.group(1) + p for p in expand(m.group(2))]
        elif item:
            out.append(item.split(" as ")[0].strip())
    return out


def references(text):
    """Every `crate::`, `super::` and `self::` path used in a (stripped) file."""
    refs = []
    for m in re.finditer(r"\b(?:crate|super|self)(?:::(?:[A-Za-z_]\w*))*::\{", text):
        close = block_end(text, m.end() - 1)
        prefix = m.group(0)[:-1]
        refs += [prefix + p for p in expand(text[m.end():close])]
    refs += re.findall(r"\b(?:crate|super|self)(?:::[A-Za-z_]\w*)+", text)
    return refs


def resolve(ref, here):
    """An absolute module path for a reference made from module `here`, or None."""
    segs = ref.split("::")
    if segs[0] == "crate":
        return segs[1:]
    base = list(here)
    for s in list(segs):
        if s == "super":
            if not base:
                return None
            base.pop()
        elif s != "self":
            break
        segs = segs[1:]
    return base + [s for s in segs if s not in ("super", "self")]


class Tree:
    def __init__(self, src):
        self.src = src
        paths = sorted(src.rglob("*.rs"))
        self.raw = {p: p.read_text() for p in paths}
        self.code = {p: without_tests(strip(t)) for p, t in self.raw.items()}
        self.mods = {p: module_path(p, src) for p in paths}
        self.top = {m[0] for m in self.mods.values() if m}

    def rel(self, p):
        return str(p.relative_to(self.src.parent))

    def uses(self):
        """(file, absolute path used) for every reference in non-test code."""
        for p, text in self.code.items():
            for ref in references(text):
                target = resolve(ref, self.mods[p])
                if target:
                    yield p, target


def top_cycles(tree):
    deps = {}
    for p, target in tree.uses():
        mod = tree.mods[p][:1]
        if mod and target[0] in tree.top and target[0] != mod[0]:
            deps.setdefault(mod[0], set()).add(target[0])
    return deps, rings(deps)


def rings(deps):
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
    return found


def folder_cycles(tree):
    """Rings between sibling files (or sub-folders) of one folder."""
    deps = {}
    for p, target in tree.uses():
        here = tree.mods[p]
        for depth in range(1, len(here)):
            folder, child = here[:depth], here[depth]
            if target[:depth] == folder and len(target) > depth and target[depth] != child:
                key = "/".join(folder)
                deps.setdefault(key, {}).setdefault(child, set()).add(target[depth])
    out = []
    for folder, graph in sorted(deps.items()):
        path = folder.split("/")
        children = {m[len(path)] for m in tree.mods.values() if m[:len(path)] == path and len(m) > len(path)}
        graph = {a: bs & children for a, bs in graph.items()}
        out += [f"src/{folder}: " + " -> ".join(r) for r in rings(graph)]
    return out


def arrows(tree):
    out = set()
    for p, target in tree.uses():
        here = tree.mods[p]
        if not here or target[0] not in tree.top:
            continue
        never = NEVER.get(here[0], DEFAULT_NEVER)
        if here[0] != target[0] and target[0] in never:
            out.add(f"{tree.rel(p)}: {here[0]} uses {target[0]} ({never[target[0]]})")
    for p, text in tree.code.items():
        if tree.mods[p][:1] == ["proto"]:
            for m in PROTO_IO.finditer(text):
                out.add(f"{tree.rel(p)}: proto does I/O ({m.group(0)})")
    return sorted(out)


def root_imports(tree):
    out = set()
    for p, target in tree.uses():
        if tree.mods[p] and target and target[0] not in tree.top:
            out.add(f"{tree.rel(p)}: imports the crate root (crate::{target[0]})")
    return sorted(out)


def long_functions(tree):
    out = []
    for path, text in tree.code.items():
        for m in re.finditer(r"\bfn\s+([a-zA-Z_][a-zA-Z0-9_]*)", text):
            brace = text.find("{", m.end())
            semi = text.find(";", m.end())
            if brace == -1 or (semi != -1 and semi < brace):
                continue  # a trait method without a body
            end = block_end(text, brace)
            start_line = text.count("\n", 0, m.start()) + 1
            end_line = text.count("\n", 0, end) + 1
            out.append((end_line - start_line + 1, f"{tree.rel(path)}:{start_line}", m.group(1)))
    out.sort(reverse=True)
    return out


def big_files(tree):
    out = []
    for p, raw in tree.raw.items():
        stripped = strip(raw)
        tests = sum(stripped.count("\n", a, b) + 1 for a, b in test_spans(stripped))
        out.append((raw.count("\n") + (not raw.endswith("\n")) - tests, tree.rel(p)))
    out.sort(reverse=True)
    return out


def report(title, items):
    for item in items:
        print(f"structure: {title}: {item}")
    return not items


def main(argv):
    src = pathlib.Path(argv[1]).resolve() if len(argv) > 1 else SRC
    tree = Tree(src)
    ok = True
    deps, found = top_cycles(tree)
    ok &= report("module cycle", [" -> ".join(r) for r in found])
    ok &= report("circle inside a folder", folder_cycles(tree))
    ok &= report("arrow against the design", arrows(tree))
    ok &= report("crate root", root_imports(tree))
    fns = long_functions(tree)
    over = [f"{w} {n} is {l} lines (limit {MAX_FN})" for l, w, n in fns
            if l > MAX_FN and f"{w.split(':')[0]}:{n}" not in LONG_FNS]
    ok &= report("long function", over)
    files = big_files(tree)
    big = [f"{p} has {l} lines of code (limit {MAX_FILE})" for l, p in files
           if l > MAX_FILE and p not in BIG_FILES]
    ok &= report("big file", big)
    print(f"structure: {len(deps)} modules; longest functions (limit {MAX_FN}):")
    for lines, where, name in fns[:5]:
        print(f"  {lines:4} {name} ({where})")
    print(f"structure: biggest files (limit {MAX_FILE} lines of code):")
    for lines, path in files[:5]:
        print(f"  {lines:4} {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
