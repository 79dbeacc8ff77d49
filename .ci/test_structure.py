#!/usr/bin/env python3
"""A test of .ci/structure.py (issue 30): a small clean tree passes, and a planted
violation of each rule is refused with its own message. Run by .ci/run before the check."""
import contextlib
import importlib.util
import io
import pathlib
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
spec = importlib.util.spec_from_file_location("structure", HERE / "structure.py")
structure = importlib.util.module_from_spec(spec)
spec.loader.exec_module(structure)

CLEAN = {
    "lib.rs": "pub mod levels;\npub mod proto;\npub mod spool;\npub mod outbound;\npub mod inbound;\npub mod server;\n"
              "pub fn prepare() {}\n",
    "main.rs": "fn main() { postern::prepare(); }\n",
    "levels.rs": "pub struct RuleLevel;\n",
    "server.rs": "pub async fn stopped() {}\n",
    "proto/mod.rs": "pub mod reply;\npub mod command;\n",
    "proto/reply.rs": "pub struct Reply;\n",
    "proto/command.rs": "use super::reply::Reply;\npub fn parse(_b: &[u8]) -> Option<Reply> { None }\n",
    "spool/mod.rs": "pub mod envelope;\npub use envelope::Envelope;\n",
    "spool/envelope.rs": "pub struct Envelope { pub rule: Option<crate::levels::RuleLevel> }\n"
                         "#[cfg(test)]\nmod tests {\n" + "    // test line\n" * 800 + "}\n",
    "outbound/mod.rs": "pub mod attempt;\nuse crate::spool::Envelope;\npub fn run(_e: Envelope) { crate::server::stopped(); }\n",
    "outbound/attempt.rs": "pub fn one() {\n" + "    let _x = 1;\n" * 50 + "}\n",
    "inbound/mod.rs": "use crate::{spool::{self, Envelope}, proto::reply::Reply};\npub fn run(_e: Envelope, _r: Reply) {}\n",
}

PLANTED = {
    "module cycle": {"spool/extra.rs": "pub fn f() { crate::outbound::run; }\n",
                     "spool/mod.rs": CLEAN["spool/mod.rs"] + "pub mod extra;\n"},
    "circle inside a folder": {"proto/reply.rs": "pub struct Reply;\nuse super::command::parse;\n"},
    "arrow against the design": {"spool/envelope.rs": "use crate::inbound::run;\n"},
    "proto does I/O": {"proto/reply.rs": "pub struct Reply;\nfn f() { let _ = std::fs::read(\"x\"); }\n"},
    "crate root": {"outbound/attempt.rs": "use crate::prepare;\n"},
    "long function": {"outbound/attempt.rs": "pub fn one() {\n" + "    let _x = 1;\n" * 60 + "}\n"},
    "big file": {"inbound/mod.rs": CLEAN["inbound/mod.rs"] + "// a line\n" * 700},
}


def run(files):
    with tempfile.TemporaryDirectory() as tmp:
        src = pathlib.Path(tmp) / "src"
        for name, text in files.items():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            (src / name).write_text(text)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = structure.main(["structure.py", str(src)])
        return code, out.getvalue()


def main():
    failures = []
    code, out = run(CLEAN)
    if code != 0:
        failures.append(f"the clean tree was refused:\n{out}")
    for rule, change in PLANTED.items():
        code, out = run({**CLEAN, **change})
        # The arrow's own message: proto's I/O is reported as an arrow against the design.
        word = "arrow against the design" if rule == "proto does I/O" else rule
        if code != 1 or f"structure: {word}:" not in out:
            failures.append(f"planted {rule!r} was not refused (exit {code}):\n{out}")
        elif rule == "proto does I/O" and "proto does I/O" not in out:
            failures.append(f"planted {rule!r} reported without its reason:\n{out}")
    for f in failures:
        print("test_structure: " + f)
    print(f"test_structure: {1 + len(PLANTED) - len(failures)} of {1 + len(PLANTED)} cases hold")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
