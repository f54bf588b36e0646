"""Evaluation: the ΔAPC table, interviews with an LLM judge, the EGOS memory/consistency/quality tests and the
out-of-character rate. Every eval appends raw rows (stable ids, so interrupted runs resume) to a JSONL file and
writes a Markdown and a self-contained HTML report with plots. Commands: `rolecraft eval ...` (commands.py).
"""
