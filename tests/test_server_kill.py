"""Durability: a server process killed with SIGKILL mid-conversation loses no acknowledged turn.

The server runs as its own process (test_server_support.py run as a script, with the scripted
model, slowed down so the kill lands while a reply is being streamed).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai

SUPPORT = Path(__file__).with_name("test_server_support.py")


@contextmanager
def server_process(root: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(SUPPORT.parent)}
    proc = subprocess.Popen(
        [sys.executable, str(SUPPORT), str(root), "0.05"], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        url = f"http://127.0.0.1:{port}/v1"
        for _ in range(200):  # the port is bound before uvicorn accepts: wait until it answers
            try:
                httpx.get(f"{url}/models", timeout=1)
                break
            except httpx.TransportError:
                pass
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def test_sigkill_mid_conversation_keeps_every_acknowledged_turn(tmp_path: Path) -> None:
    acknowledged: list[tuple[str, str]] = []
    with server_process(tmp_path) as (url, proc):
        client = openai.OpenAI(base_url=url, api_key="undefined", max_retries=0, timeout=30)
        for i, stream in enumerate([False, True, False, True]):
            text = f"Turn number {i} of the voyage"
            messages = [{"role": "user", "content": text}]
            if stream:
                chunks = list(client.chat.completions.create(
                    model="ada-vell", messages=messages, stream=True, extra_body={"session_id": "voyage"}
                ))  # fmt: skip
                reply = next(c.model_extra["rolecraft"]["reply"] for c in chunks if c.model_extra.get("rolecraft"))
            else:
                reply = client.chat.completions.create(
                    model="ada-vell", messages=messages, extra_body={"session_id": "voyage"}
                ).choices[0].message.content
            acknowledged.append((text, reply))
        # a fifth turn is streaming when the process is killed
        body = {"model": "ada-vell", "messages": [{"role": "user", "content": "Unfinished"}], "stream": True,
                "session_id": "voyage"}  # fmt: skip
        with httpx.stream("POST", f"{url}/chat/completions", json=body, timeout=30) as r:
            for line in r.iter_lines():
                if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                    proc.send_signal(signal.SIGKILL)
                    break
        assert proc.wait(timeout=30) == -signal.SIGKILL
    with server_process(tmp_path) as (url, _):
        stored = httpx.get(f"{url}/sessions/voyage").json()
        assert [(t["user"], t["reply"]) for t in stored["turns"]] == acknowledged  # the unfinished turn is not there
        # and the conversation goes on from where it was acknowledged
        next_turn = httpx.post(
            f"{url}/chat/completions",
            json={"model": "ada-vell", "messages": [{"role": "user", "content": "Again"}], "session_id": "voyage"},
            timeout=30,
        ).json()
        assert next_turn["rolecraft"]["turn"] == len(acknowledged)
