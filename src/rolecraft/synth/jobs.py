"""The job runner every synthesis step shares: resumable, concurrent, counted.

A step is a list of *items* (a passage chunk, a statement, a (statement, query) pair, a scene), each
with an id fixed by everything that determines its output (inputs and prompt version). Running a
step works through the items not done yet, several at once, and for each finished item

1. appends its rows to `datasets/<step>.jsonl` in one write, flushed and fsynced, then
2. appends one line to the journal `datasets/journal/<step>.jsonl` naming the item and its row ids.

The journal is the record of what is done. On the next run a torn last line (a kill mid-write) is
ignored, rows that no journal line claims (a kill between 1 and 2) and items whose inputs changed are
removed, and only the missing items run. So a run can be killed at any moment and rerun: nothing is
lost beyond the items in flight and nothing is duplicated. `datasets/manifest.json` records, per
step, the hash of its inputs and prompt version, so `rolecraft synth status` can tell stale steps.

Local models are not thread-safe but batch well: `Teacher` funnels the worker threads' calls into
`chat_batch`. HTTP teachers take the calls as they come (N requests in flight; the HTTP client
retries 429/5xx itself). Unparsable replies are retried with another seed and a short backoff, up to
a cap, then the item is dropped and the reason counted.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import queue
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import RolecraftError
from ..llm.base import LLM, Message, Sampling
from ..paths import atomic_write_json, atomic_write_text
from .parse import ParseError, stable_id

MANIFEST_FORMAT = "rolecraft-synth-manifest-v1"


# ---------------------------------------------------------------------------------------------
# JSONL files


def read_jsonl(path: Path) -> tuple[list[dict[str, Any]], bool]:
    """The rows of a JSONL file and whether it was clean (False: a torn or foreign line was skipped)."""
    if not path.is_file():
        return [], True
    rows, clean = [], True
    data = path.read_bytes()
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:  # a torn last line from a kill mid-write, or a hand-edited mistake
            clean = False
            continue
        if isinstance(row, dict):
            rows.append(row)
        else:
            clean = False
    if data and not data.endswith(b"\n"):
        clean = False
    return rows, clean


def append_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    """Append rows in one write, then flush and fsync: a row is on disk before it is counted done."""
    if not rows:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    with open(path, "ab") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    """Replace a JSONL file atomically."""
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


# ---------------------------------------------------------------------------------------------
# The teacher


@dataclass
class Stats:
    """Counters shared by the worker threads of one step run."""

    retries: Counter[str] = field(default_factory=Counter)  # unparsable replies that were retried
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self.lock:
            for k, v in counts.items():
                setattr(self, k, getattr(self, k) + v)

    def count(self, counter: str, reason: str, n: int = 1) -> None:
        with self.lock:
            getattr(self, counter)[reason] += n


class Dropped(Exception):
    """An item (or one call of it) given up on; `reason` is what the last attempt failed with."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class _Batcher:
    """Funnels `chat` calls from many threads into `chat_batch` calls of one (thread-unsafe) model."""

    def __init__(self, llm: LLM, batch_size: int, lock: threading.Lock, linger: float = 0.05):
        self.llm, self.batch_size, self.lock, self.linger = llm, max(1, batch_size), lock, linger
        self.requests: queue.Queue[tuple[list[Message], Sampling, Future[str]] | None] = queue.Queue()
        self.thread = threading.Thread(target=self._loop, name="rolecraft-synth-batcher", daemon=True)
        self.thread.start()

    def chat(self, messages: list[Message], sampling: Sampling) -> str:
        future: Future[str] = Future()
        self.requests.put((messages, sampling, future))
        return future.result()

    def close(self) -> None:
        self.requests.put(None)

    def _loop(self) -> None:
        while True:
            first = self.requests.get()
            if first is None:
                return
            batch = [first]
            deadline = time.monotonic() + self.linger
            while len(batch) < self.batch_size:
                try:
                    nxt = self.requests.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if nxt is None:
                    self.requests.put(None)
                    break
                batch.append(nxt)
            groups: dict[Sampling, list[tuple[list[Message], Sampling, Future[str]]]] = {}
            for req in batch:  # one chat_batch per sampling setting (the seed of the first is used)
                groups.setdefault(replace(req[1], seed=None), []).append(req)
            for group in groups.values():
                try:
                    with self.lock:
                        texts = self.llm.chat_batch([g[0] for g in group], group[0][1])
                except BaseException as exc:
                    for g in group:
                        g[2].set_exception(exc)
                    continue
                for g, text in zip(group, texts, strict=True):
                    g[2].set_result(text)


def is_http(llm: LLM) -> bool:
    from ..llm.openai_compat import OpenAICompatLLM

    return isinstance(llm, OpenAICompatLLM)


class Teacher:
    """The teacher LLM as the steps use it: `ask` = generate, parse strictly, retry, count.

    `concurrency`: items in flight. HTTP teachers get that many requests at once; any other backend
    gets its calls gathered into batches of up to that size (`chat_batch`), one batch at a time.
    """

    def __init__(
        self,
        llm: LLM,
        concurrency: int = 4,
        tries: int = 3,
        backoff: float = 0.2,
        temperature: float = 0.7,
        seed: int = 0,
    ):
        self.llm = llm
        self.concurrency = max(1, concurrency)
        self.tries = max(1, tries)
        self.backoff = backoff
        self.temperature = temperature
        self.seed = seed
        self.http = is_http(llm)
        self.tokens_exact = not self.http  # the HTTP backend only estimates (4 characters a token)
        self._model_lock = threading.Lock()  # a local model and its tokenizer serve one thread at a time
        self._start_lock = threading.Lock()
        self._batcher: _Batcher | None = None  # started on the first call of a non-HTTP teacher
        self.stats = Stats()

    @property
    def name(self) -> str:
        return self.llm.name

    def close(self) -> None:
        if self._batcher:
            self._batcher.close()

    def _chat(self, messages: list[Message], sampling: Sampling) -> str:
        if self.http:
            return self.llm.chat(messages, sampling)
        with self._start_lock:
            if self._batcher is None:
                self._batcher = _Batcher(self.llm, self.concurrency, self._model_lock)
        return self._batcher.chat(messages, sampling)

    def _count_tokens(self, messages: list[Message], reply: str) -> tuple[int, int]:
        """Prompt tokens, and the reply's as the growth of the conversation (as the server counts)."""
        if messages and messages[-1]["role"] == "assistant":
            grown = [*messages[:-1], {"role": "assistant", "content": messages[-1]["content"] + reply}]
        else:
            grown = [*messages, {"role": "assistant", "content": reply}]
        lock = self._model_lock if not self.http else contextlib.nullcontext()
        try:
            with lock:
                prompt = self.llm.count_tokens(messages)
                total = self.llm.count_tokens(grown)
        except Exception:  # token counts are a courtesy; never fail a run over them
            return 0, 0
        return prompt, max(0, total - prompt)

    def ask(
        self,
        messages: list[Message],
        parse: Callable[[str], Any],
        key: Any,
        max_new_tokens: int = 200,
        temperature: float | None = None,
        stop: tuple[str, ...] = (),
        tries: int | None = None,
    ) -> Any:
        """Ask until `parse` accepts a reply (at most `tries` times); raises `Dropped` otherwise.

        A trailing assistant message is a prefill (e.g. `[`): servers that continue it return only
        the rest, so the prefill is put back before parsing; a reply that starts afresh is parsed too.
        `key` (any JSON-able value) fixes the seeds, so a rerun asks exactly the same questions.
        """
        prefill = messages[-1]["content"] if messages and messages[-1]["role"] == "assistant" else ""
        temp = self.temperature if temperature is None else temperature
        reason = "empty"
        tries = self.tries if tries is None else max(1, tries)
        for attempt in range(tries):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
                temp = max(temp, 0.7)  # a greedy retry would repeat the same reply
            seed = int(stable_id("seed", self.seed, key, attempt)[:8], 16) % 2**31
            sampling = Sampling(temperature=temp, top_p=0.95, max_new_tokens=max_new_tokens, stop=stop, seed=seed)
            reply = self._chat(messages, sampling)
            p, c = self._count_tokens(messages, reply)
            self.stats.add(calls=1, prompt_tokens=p, completion_tokens=c)
            candidates = [prefill + reply, reply] if prefill and not reply.startswith(prefill) else [reply]
            errors = []
            for text in candidates:
                try:
                    return parse(text)
                except ParseError as exc:
                    errors.append(exc.reason)
            reason = errors[0]
            if len(errors) == 2 and errors[1] in ("no list", "no object") and not any(c in reply for c in "[]{}"):
                reason = errors[1]  # plain prose, not a broken continuation of the prefill
            if attempt + 1 < tries:
                self.stats.count("retries", reason)
        raise Dropped(reason)


# ---------------------------------------------------------------------------------------------
# Steps and the runner


@dataclass
class Item:
    id: str
    data: Any


@dataclass
class Outcome:
    rows: list[dict[str, Any]] = field(default_factory=list)
    rejected: Counter[str] = field(default_factory=Counter)
    notes: Counter[str] = field(default_factory=Counter)  # other per-item facts worth a count


class Step:
    """One synthesis step. Subclasses set `name`, `version` and implement `items` and `work`."""

    name = "step"
    version = "1"
    uses_teacher = True

    def items(self) -> list[Item]:
        raise NotImplementedError

    def inputs_hash(self, items: list[Item]) -> str:
        return stable_id(self.name, self.version, sorted(i.id for i in items))

    def work(self, item: Item, teacher: Teacher | None) -> Outcome:
        raise NotImplementedError

    def start(self, rows: list[dict[str, Any]]) -> None:
        """Called before the items run, with the rows already on file."""

    def accept(self, row: dict[str, Any]) -> str | None:
        """Called for each new row (one at a time, in the writer thread): a reason to refuse it, or None.
        Rows with an id already on file are refused as "duplicate" before this is asked."""
        return None

    def finish(self, rows: list[dict[str, Any]]) -> None:
        """Called after every run with all rows on file (e.g. to update the character)."""

    def warnings(self, rows: list[dict[str, Any]]) -> list[str]:
        """Signs in the rows on file that the teacher is not up to the step (shown in the summary)."""
        return []


@dataclass
class Summary:
    step: str
    path: Path
    items: int = 0
    done_before: int = 0
    ran: int = 0
    left: int = 0
    rows: int = 0
    rows_total: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    retries: Counter[str] = field(default_factory=Counter)
    notes: Counter[str] = field(default_factory=Counter)
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tokens_exact: bool = True
    stale: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["path"] = str(self.path)
        for k in ("dropped", "rejected", "retries", "notes"):
            d[k] = dict(d[k].most_common())
        return d

    def lines(self) -> list[str]:
        """A short human summary."""

        def reasons(c: Counter[str]) -> str:
            return ", ".join(f"{k} {v}" for k, v in c.most_common()) or "none"

        approx = "" if self.tokens_exact else "≈"
        out = [
            f"{self.step}: {self.ran} items run, {self.done_before} done before, {self.left} left "
            f"(of {self.items}); {self.rows} rows made, {self.rows_total} on file in {self.path}",
            f"  items dropped: {reasons(self.dropped)}",
            f"  lines rejected: {reasons(self.rejected)}",
            f"  retries: {reasons(self.retries)}",
        ]
        if self.notes:
            out.append(f"  notes: {reasons(self.notes)}")
        if self.stale:
            out.append(f"  stale rows removed (inputs changed): {self.stale}")
        if self.calls:
            out.append(f"  teacher calls: {self.calls}; tokens: {approx}{self.prompt_tokens} prompt, "
                       f"{approx}{self.completion_tokens} completion")
        out.append(f"  time: {self.seconds:.1f}s" + (" (interrupted)" if self.interrupted else ""))
        out += [f"  warning: {w}" for w in self.warnings]
        return out


def datasets_dir(folder: Path) -> Path:
    return folder / "datasets"


def read_manifest(folder: Path) -> dict[str, Any]:
    path = datasets_dir(folder) / "manifest.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"format": MANIFEST_FORMAT, "steps": {}}
    if not isinstance(data, dict) or not isinstance(data.get("steps"), dict):
        return {"format": MANIFEST_FORMAT, "steps": {}}
    return data


def _update_manifest(folder: Path, step: str, entry: dict[str, Any]) -> None:
    lock = datasets_dir(folder) / "journal" / ".manifest.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as fh:  # runs of different steps may finish at the same moment
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        manifest = read_manifest(folder)
        manifest["steps"][step] = entry
        atomic_write_json(datasets_dir(folder) / "manifest.json", manifest)


@contextlib.contextmanager
def _step_lock(path: Path, label: str) -> Iterator[None]:
    """One run per step and character at a time (the lock goes away with the process, even on kill)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RolecraftError(f"Another synthesis run is already working on {label}; wait for it to end.") from None
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _load_state(
    data_path: Path, journal_path: Path, current: set[str], retry_dropped: bool
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]], int]:
    """Rows and journal entries still valid; repairs the files when anything had to go."""
    journal, journal_clean = read_jsonl(journal_path)
    rows, rows_clean = read_jsonl(data_path)
    entries: dict[str, dict[str, Any]] = {}
    for entry in journal:
        item = entry.get("item")
        if isinstance(item, str) and item in current and not (retry_dropped and entry.get("dropped")):
            entries[item] = entry
    claimed = {rid for e in entries.values() for rid in e.get("rows", [])}
    kept, seen = [], set()
    for row in rows:
        rid = row.get("id")
        if rid in claimed and rid not in seen:
            kept.append(row)
            seen.add(rid)
    stale = len(rows) - len(kept)
    if stale or not rows_clean:
        write_jsonl(data_path, kept)
    if len(entries) != len(journal) or not journal_clean:
        write_jsonl(journal_path, list(entries.values()))
    return kept, entries, stale


def run_step(
    step: Step,
    folder: Path,
    teacher: Teacher | None,
    limit: int | None = None,
    fresh: bool = False,
    retry_dropped: bool = False,
    progress: bool = True,
) -> Summary:
    """Run `step` for the character whose workspace folder is `folder`; see the module docstring."""
    data_path = datasets_dir(folder) / f"{step.name}.jsonl"
    journal_path = datasets_dir(folder) / "journal" / f"{step.name}.jsonl"
    summary = Summary(step.name, data_path, tokens_exact=teacher.tokens_exact if teacher else True)
    started = time.monotonic()
    with _step_lock(datasets_dir(folder) / "journal" / f".{step.name}.lock", f"step '{step.name}' of {folder.name}"):
        if fresh:
            data_path.unlink(missing_ok=True)
            journal_path.unlink(missing_ok=True)
        items = step.items()
        current = {i.id for i in items}
        rows, entries, summary.stale = _load_state(data_path, journal_path, current, retry_dropped)
        pending = [i for i in items if i.id not in entries]
        summary.items, summary.done_before = len(current), len(current) - len(pending)
        todo = pending if limit is None else pending[: max(0, limit)]
        seen = {r["id"] for r in rows}
        step.start(rows)
        entry = {"inputs": step.inputs_hash(items), "version": step.version,
                 "teacher": teacher.name if teacher and step.uses_teacher else None}
        stats_before = _stats_snapshot(teacher)
        bar = _progress(len(todo), step.name, progress)

        def record(item: Item, outcome: Outcome | None, dropped: str | None) -> None:
            new = []
            if outcome is not None:
                for row in outcome.rows:
                    reason = "duplicate" if row["id"] in seen else step.accept(row)
                    if reason:
                        outcome.rejected[reason] += 1
                        continue
                    seen.add(row["id"])
                    new.append(row)
                summary.rejected.update(outcome.rejected)
                summary.notes.update(outcome.notes)
            append_jsonl(data_path, new)
            line: dict[str, Any] = {"item": item.id, "rows": [r["id"] for r in new]}
            if dropped:
                line["dropped"] = dropped
                summary.dropped[dropped] += 1
            if outcome is not None and outcome.rejected:
                line["rejected"] = dict(outcome.rejected)
            append_jsonl(journal_path, [line])
            rows.extend(new)
            summary.ran += 1
            summary.rows += len(new)
            bar.update(1)
            bar.set_postfix(rows=summary.rows, dropped=sum(summary.dropped.values()), refresh=False)

        def work(item: Item) -> Outcome:
            return step.work(item, teacher)

        try:
            workers = teacher.concurrency if teacher and step.uses_teacher else 1
            with ThreadPoolExecutor(max_workers=workers) as pool:
                queue_ = iter(todo)
                running: dict[Future[Outcome], Item] = {}
                try:
                    while True:
                        while len(running) < workers * 2:
                            nxt = next(queue_, None)
                            if nxt is None:
                                break
                            running[pool.submit(work, nxt)] = nxt
                        if not running:
                            break
                        finished, _ = wait(running, return_when=FIRST_COMPLETED)
                        for fut in finished:
                            item = running.pop(fut)
                            try:
                                outcome = fut.result()
                            except Dropped as exc:
                                record(item, None, exc.reason)
                            else:
                                record(item, outcome, None)
                except BaseException:
                    for fut in running:
                        fut.cancel()
                    raise
        except KeyboardInterrupt:
            summary.interrupted = True
            raise
        finally:
            bar.close()
            summary.left = len(pending) - summary.ran
            summary.rows_total = len(rows)
            _stats_delta(summary, teacher, stats_before)
            summary.seconds = time.monotonic() - started
            _update_manifest(folder, step.name, {
                **entry, "items": summary.items, "done": summary.items - summary.left, "rows": len(rows),
                "complete": summary.left == 0,
                "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),  # noqa: UP017
            })
        step.finish(rows)
        summary.warnings = step.warnings(rows)
    return summary


def _stats_snapshot(teacher: Teacher | None) -> tuple[Counter[str], int, int, int]:
    if teacher is None:
        return Counter(), 0, 0, 0
    s = teacher.stats
    with s.lock:
        return Counter(s.retries), s.calls, s.prompt_tokens, s.completion_tokens


def _stats_delta(summary: Summary, teacher: Teacher | None, before: tuple[Any, ...]) -> None:
    now = _stats_snapshot(teacher)
    summary.retries.update(now[0] - before[0])
    summary.calls = now[1] - before[1]
    summary.prompt_tokens = now[2] - before[2]
    summary.completion_tokens = now[3] - before[3]


class _NoBar:
    def update(self, n: int = 1) -> None: ...
    def set_postfix(self, **kw: Any) -> None: ...
    def close(self) -> None: ...


def _progress(total: int, desc: str, enabled: bool) -> Any:
    if not enabled or total == 0:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="item", file=sys.stderr, dynamic_ncols=True, leave=True)
