"""A gallery of dataset inputs: every supported format, and the ways real files go wrong.

Written by code (Parquet, DOCX and PDF are binary), so each test gets a fresh copy and the
exact rows below are what the assertions count.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

GOOD_ALPACA = [
    {"instruction": "Add 2 and 3.", "input": "", "output": "2 + 3 = 5. #### 5"},
    {"instruction": "Subtract.", "input": "9 minus 4", "output": "9 - 4 = 5. #### 5"},
]
GOOD_OPENAI = [{"messages": [{"role": "system", "content": "Be brief."},
                             {"role": "user", "content": "Capital of France?"},
                             {"role": "assistant", "content": "Paris."}]}]
GOOD_SHAREGPT = [{"conversations": [{"from": "human", "value": "Say hi to Ada."},
                                    {"from": "gpt", "value": "Hi Ada!"}]}]
PREFERENCES = [
    {"prompt": "Is the sky blue?", "chosen": "Yes, on a clear day.", "rejected": "No."},
    {"prompt": [{"role": "user", "content": "2+2?"}], "chosen": "4", "rejected": "5"},
    {"prompt": "Same?", "chosen": "a", "rejected": "a"},
]


def minimal_pdf(text: str) -> bytes:
    """A valid one-page PDF with one line of text (cross-reference offsets computed)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n"\
        .encode()
    return bytes(out)


def write_good(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "alpaca.jsonl").write_text("".join(json.dumps(r) + "\n" for r in GOOD_ALPACA))
    (root / "openai.json").write_text(json.dumps(GOOD_OPENAI))
    (root / "sharegpt.jsonl").write_text("".join(json.dumps(r) + "\n" for r in GOOD_SHAREGPT))
    (root / "pc.csv").write_text('prompt,completion\n"Hello, who?",It is me.\nName a color,Red\n')
    pq.write_table(pa.Table.from_pylist([
        {"prompt": "Parquet question one", "completion": "Answer one"},
        {"prompt": "Parquet question two", "completion": "Answer two"},
    ]), root / "pc.parquet")


# Line numbers matter: the tests assert them.
BROKEN_LINES = [
    json.dumps({"instruction": "Row one.", "output": "Fine."}),                       # 1 ok
    json.dumps({"instruction": "Missing output."}),                                   # 2
    json.dumps({"messages": "user: hi"}),                                             # 3
    json.dumps({"messages": []}),                                                     # 4
    json.dumps({"instruction": "Row one.", "output": "Fine."}),                       # 5 dup of 1
    json.dumps({"messages": [{"role": "user", "content": "Mail bob@example.com or call "
                              "555-123-4567; SSN 123-45-6789; card 4111 1111 1111 1111."},
                             {"role": "assistant", "content": "Noted."}]}),           # 6 PII
    '{"instruction": "broken", "output": ',                                           # 7
    json.dumps({"messages": [{"role": "user", "content": "Hi"},
                             {"role": "robot", "content": "Beep"}]}),                 # 8
    json.dumps({"messages": [{"role": "user", "content": "Only a question?"}]}),      # 9
    json.dumps({"instruction": 42, "output": ["not", "text"]}),                       # 10
    json.dumps(["a", "list"]),                                                        # 11
    json.dumps({"colour": "no known fields"}),                                        # 12
]


def write_broken_rows(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "broken.jsonl"
    data = "\n".join(BROKEN_LINES).encode() + b"\n"
    # line 13: a Latin-1 row inside a UTF-8 file (mixed encodings)
    data += json.dumps({"instruction": "Caf\u00e9?", "output": "Oui."}, ensure_ascii=False)\
        .encode("latin-1") + b"\n"
    path.write_bytes(data)
    return path


def write_broken_files(root: Path) -> dict[str, Path]:
    root.mkdir(parents=True, exist_ok=True)
    files = {
        "binary": root / "model.jsonl",
        "empty": root / "empty.jsonl",
        "truncated": root / "cut.parquet",
        "utf16": root / "utf16.csv",
        "bad_json": root / "array.json",
    }
    files["binary"].write_bytes(b"\x00\x01\x02PK\x03\x04" * 100)
    files["empty"].write_text("  \n")
    good = root / "whole.parquet"
    pq.write_table(pa.Table.from_pylist([{"prompt": "p", "completion": "c"}] * 50), good)
    files["truncated"].write_bytes(good.read_bytes()[:200])
    good.unlink()
    files["utf16"].write_bytes("prompt,completion\nhi,there\n".encode("utf-16"))
    files["bad_json"].write_text('[{"prompt": "a", "completion": "b"},\n {"prompt": ')
    return files


def write_documents(root: Path) -> None:
    import docx

    root.mkdir(parents=True, exist_ok=True)
    (root / "notes.txt").write_text("Plain notes about the Borealis merger.\n\nSecond paragraph.")
    (root / "readme.md").write_text("# Title\n\nMarkdown body about Cobalt Mining.")
    (root / "page.html").write_text("<html><head><style>p{}</style><script>var x=1</script>"
                                    "</head><body><nav>menu</nav><p>Halcyon Foods grew 12%."
                                    "</p></body></html>")
    document = docx.Document()
    document.add_paragraph("Juniper Robotics board minutes.")
    document.save(str(root / "minutes.docx"))
    (root / "report.pdf").write_bytes(minimal_pdf("Kestrel Energy annual revenue rose."))
    (root / "corrupt.pdf").write_bytes(b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R")
