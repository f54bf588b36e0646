"""`rolecraft build CHARACTER`: import → statements → queries → (discriminators) → (SFT) → DPO → report.

One config file (TOML or YAML) drives the chain; `preset = "cpu-small"` or `"gpu"` in it (or
`--preset`) starts from a shipped preset (`rolecraft/presets/*.toml`) and the file's keys override it.
Every step hashes its inputs (its config section plus the files it reads) into
`<workspace>/<slug>/build/manifest.json`; a rerun skips a step whose inputs and outputs are unchanged.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import RolecraftError
from .paths import atomic_write_json

PRESETS = ("cpu-small", "gpu")
SECTIONS = {
    "model": {"name": "smollm2", "threads": 0, "launch": ""},
    "agent": {"mode": "rag", "top_k": 5, "style": "chat", "max_new_tokens": 48},
    "teacher": {"backend": "local", "model": "smollm2", "base_url": "", "concurrency": 4, "temperature": 0.7,
                "seed": 0},
    "extract": {"run": "wiki", "limit": 0, "min_statements": 5},
    "queries": {"synthesize": True, "per_statement": 2, "limit": 0, "heldout": 6, "files": [], "generic": True,
                "max_train": 0},
    "discriminators": {"enabled": False, "limit": 0, "epochs": 1.0},
    "sft": {"enabled": "auto", "alpaca": [], "alpaca_limit": 0, "steps": 4, "batch_size": 2, "grad_accum": 1,
            "learning_rate": 2e-4, "max_length": 384, "gradient_checkpointing": False},
    "dpo": {"enabled": True, "candidates": 4, "temperature": 0.9, "top_p": 0.95, "margin": 0.5, "ooc": "reject",
            "max_pairs": 0, "steps": 4, "batch_size": 2, "grad_accum": 1, "learning_rate": 1e-4, "beta": 0.1,
            "max_length": 384, "max_prompt_length": 320, "gradient_checkpointing": False, "gen_batch_size": 16},
    "lora": {"rank": 8, "alpha": 16, "dropout": 0.05,
             "targets": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]},
    "report": {"enabled": True, "examples": 3},
}
STEP_NAMES = ("import", "extract", "queries", "discriminators", "sft", "dpo", "report")

# Asked when the teacher made too few queries (a 135M teacher drops many): plain questions any persona
# can answer. The report counts how many were used.
GENERIC_QUERIES = {
    "en": ["Who are you?", "Where do you live?", "What do you do for a living?", "How old are you?",
           "Tell me about your family.", "What do you do every day?", "What are you afraid of?",
           "What do you like to do in your free time?", "Where did you grow up?", "What makes you happy?",
           "Do you have any pets?", "What is your biggest dream?"],
    "zh": ["你是谁？", "你住在哪里？", "你是做什么工作的？", "你多大了？", "说说你的家人吧。", "你每天都做些什么？",
           "你害怕什么？", "你空闲时喜欢做什么？", "你在哪里长大？", "什么让你开心？", "你养宠物吗？",
           "你最大的梦想是什么？"],
}


# ----- config -----------------------------------------------------------------------------------
def _parse(path: Path) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            import tomllib

            data = tomllib.loads(text)
    except Exception as exc:  # tomllib / yaml raise their own error types
        raise RolecraftError(f"{path}: not valid {'YAML' if path.suffix.lower() in ('.yaml', '.yml') else 'TOML'}: "
                             f"{exc}") from None
    if not isinstance(data, dict):
        raise RolecraftError(f"{path}: the config must be a table of sections")
    return data


def preset_path(name: str) -> Path:
    if name not in PRESETS:
        raise RolecraftError(f"Unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return Path(str(resources.files("rolecraft") / "presets" / f"{name}.toml"))


def _merge(base: dict[str, Any], over: dict[str, Any], where: str) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for section, values in over.items():
        if section == "preset":
            continue
        if section not in SECTIONS:
            raise RolecraftError(f"Unknown config section [{section}]{where} (known: {', '.join(SECTIONS)})")
        if not isinstance(values, dict):
            raise RolecraftError(f"[{section}]{where} must be a table of keys")
        for key, value in values.items():
            if key not in SECTIONS[section]:
                raise RolecraftError(f"Unknown key '{key}' in [{section}]{where} "
                                     f"(known: {', '.join(SECTIONS[section])})")
            default = SECTIONS[section][key]
            ok = (isinstance(value, type(default)) or (isinstance(default, float) and isinstance(value, int))
                  or (default == "auto" and value in ("auto", True, False)))
            if not ok or (isinstance(value, bool) and not isinstance(default, bool) and default != "auto"):
                raise RolecraftError(f"[{section}] {key}{where} must be {type(default).__name__}, not {value!r}")
            out[section][key] = value
    return out


def load_config(path: Path | None = None, preset: str | None = None) -> dict[str, Any]:
    """Defaults ← preset (from --preset or the file's `preset` key) ← the file's own keys."""
    if path is not None and not Path(path).is_file():
        raise RolecraftError(f"Config file not found: {path}")
    data = _parse(Path(path)) if path is not None else {}
    name = preset or data.get("preset")
    config = copy.deepcopy(SECTIONS)
    if name:
        config = _merge(config, _parse(preset_path(str(name))), f" of preset {name}")
    config = _merge(config, data, f" of {path}" if path else "")
    config["preset"] = name or "defaults"
    return config


# ----- manifest -------------------------------------------------------------------------------
def file_hash(path: Path) -> str:
    p = Path(path)
    if p.is_dir():
        h = hashlib.sha256()
        for f in sorted(x for x in p.rglob("*") if x.is_file() and x.name != "rolecraft_adapter.json"):
            h.update(f.relative_to(p).as_posix().encode() + b"\0" + f.read_bytes())
        return h.hexdigest()[:16]
    return hashlib.sha256(p.read_bytes()).hexdigest()[:16] if p.is_file() else "missing"


def inputs_hash(section: Any, files: list[Path]) -> str:
    blob = json.dumps({"config": section, "files": [file_hash(f) for f in files]}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class BuildResult:
    slug: str
    folder: Path
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    report: Path | None = None


class Builder:
    """Runs the steps for one character; `log` gets one line per step event."""

    def __init__(self, ref: str, config: dict[str, Any], home: Path | None = None, force: bool = False,
                 progress: bool = True, log: Callable[[str], None] = print):
        self.ref, self.cfg, self.home, self.force, self.progress, self.log = ref, config, home, force, progress, log
        self.timings: dict[str, dict[str, Any]] = {}
        self.notes: list[str] = []
        self._llm_cache: dict[str, Any] = {}
        self._scorer: Any = None

    # -- shared pieces ---------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.folder / "build" / "manifest.json"

    def _manifest(self) -> dict[str, Any]:
        try:
            return json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return {}

    def _step(self, name: str, key: str, outputs: list[Path], fn: Callable[[], dict[str, Any] | None]) -> None:
        """Run `fn` unless the manifest holds the same inputs hash and every output exists."""
        manifest = self._manifest()
        entry = manifest.get(name, {})
        if not self.force and entry.get("inputs") == key and all(Path(o).exists() for o in outputs):
            self.notes += [n for n in entry.get("notes", []) if n not in self.notes]  # the report still says them
            self.timings[name] = {"status": "skipped (unchanged)", "seconds": 0.0}
            self.log(f"{name}: skipped (unchanged)")
            return
        t0 = time.perf_counter()
        self.log(f"{name}: running")
        notes_before = len(self.notes)
        info = fn() or {}
        info["notes"] = self.notes[notes_before:]
        seconds = time.perf_counter() - t0
        status = info.pop("status", "done")
        self.timings[name] = {"status": status, "seconds": seconds, **info}
        manifest = self._manifest()
        manifest[name] = {"inputs": key, "seconds": round(seconds, 1), "status": status,
                          "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **info}
        atomic_write_json(self.manifest_path, manifest)
        self.log(f"{name}: {status} in {seconds:.1f}s")

    def _skip(self, name: str, why: str) -> None:
        self.timings[name] = {"status": f"skipped ({why})", "seconds": 0.0}
        self.log(f"{name}: skipped ({why})")

    def character(self) -> Any:
        return self.target.character()

    def llm(self, adapter: Path | None = None) -> Any:
        from .llm import load_llm

        key = str(adapter)
        if key not in self._llm_cache:
            self._llm_cache.clear()  # one policy in memory at a time
            name = self.cfg["model"]["name"]
            self._llm_cache[key] = load_llm("local", None if name == "smollm2" else name, adapter=adapter)
        return self._llm_cache[key]

    def scorer(self) -> Any:
        if self._scorer is None:
            from .apc import APCScorer
            from .discriminators import Discriminator

            own = self.folder / "discriminators"
            if self.cfg["discriminators"]["enabled"] and (own / "relevance").is_dir() and (own / "nli").is_dir():
                self._scorer = APCScorer(
                    Discriminator.load(own / "relevance", dtype="auto"), Discriminator.load(own / "nli", dtype="auto")
                )
            else:
                self._scorer = APCScorer.pretrained()
        return self._scorer

    def agent(self, llm: Any) -> Any:
        from .agent import AgentConfig, RolePlayAgent

        a = self.cfg["agent"]
        if a["mode"] not in ("rag", "all", "none") or a["style"] not in ("chat", "quote"):
            raise RolecraftError("[agent] mode must be rag|all|none and style chat|quote")
        return RolePlayAgent(self.character(), llm, AgentConfig(mode=a["mode"], top_k=a["top_k"], style=a["style"],
                                                                max_new_tokens=a["max_new_tokens"]))

    def teacher(self) -> Any:
        from .llm import load_llm
        from .synth.jobs import Teacher

        t = self.cfg["teacher"]
        kwargs: dict[str, Any] = {}
        if t["backend"] == "openai":
            kwargs = {"concurrency": t["concurrency"], **({"base_url": t["base_url"]} if t["base_url"] else {})}
        model = t["model"] or self.cfg["model"]["name"]  # "": the model being trained teaches too
        model = None if model == "smollm2" and t["backend"] == "local" else model
        return Teacher(load_llm(t["backend"], model, **kwargs), concurrency=t["concurrency"],
                       temperature=t["temperature"], seed=t["seed"])

    def _synth(self, step: str, limit: int, **options: Any) -> dict[str, Any]:
        from .synth.pipeline import synthesize

        teacher = self.teacher()
        try:
            summary = synthesize(self.target, [step], teacher, limit=limit or None, progress=self.progress,
                                 **options)[0]
        finally:
            teacher.close()
        return {"rows": summary.rows_total, "ran": summary.ran, "dropped": sum(summary.dropped.values()),
                "rejected": sum(summary.rejected.values())}

    # -- the steps ----------------------------------------------------------------------------------
    def run(self) -> BuildResult:
        from .synth.pipeline import target_for
        from .workspace import CHARACTER_FILE

        threads = self.cfg["model"]["threads"]
        if threads:
            import torch

            torch.set_num_threads(threads)
        if not self.cfg["model"]["name"]:
            raise RolecraftError("Set [model] name to a local model folder (the gpu preset needs a 7B-class model).")
        t0 = time.perf_counter()
        self.target, imported = target_for(self.ref, self.home)
        self.folder = self.target.folder
        self.timings["import"] = {"status": "imported" if imported else "in workspace already",
                                  "seconds": time.perf_counter() - t0}
        self.log(f"import: {self.timings['import']['status']} ('{self.target.slug}')")
        c = self.character()
        if not c.statements and self.cfg["extract"]["run"] == "never":
            raise RolecraftError(f"'{c.name}' has no persona statements and [extract] run = \"never\".")
        self.step_extract(c)
        c = self.character()
        if not c.statements:
            raise RolecraftError(f"'{c.name}' has no persona statements after extraction; give a profile with "
                                 "more text or a statements file.")
        char_file = self.folder / CHARACTER_FILE
        self.step_queries(char_file)
        self.step_discriminators(char_file)
        sft_adapter = self.step_sft()
        dpo_adapter = self.step_dpo(char_file, sft_adapter)
        report = self.step_report(char_file, sft_adapter, dpo_adapter)
        return BuildResult(self.target.slug, self.folder, self.timings, report)

    def step_extract(self, c: Any) -> None:
        e = self.cfg["extract"]
        wiki = c.meta.get("source_format") == "wiki-text"
        if e["run"] == "never" or (e["run"] == "wiki" and not wiki):
            why = "the character came with its statements" if not wiki else "[extract] run = never"
            self.notes.append(f"extract skipped: {why}")
            return self._skip("extract", why)
        section = {**e, "teacher": self.cfg["teacher"], "passages": c.passages}
        out = self.folder / "datasets" / "statements.jsonl"

        def run() -> dict[str, Any]:
            info = self._synth("statements", e["limit"])
            kept = len(self.character().statements)
            if kept < e["min_statements"] and len(c.statements) > kept:
                # a small teacher can keep almost nothing; a persona of one fact makes APC meaningless
                self.target.workspace.add(c, overwrite=True)
                note = (f"extraction kept {kept} statement(s) (< [extract] min_statements = {e['min_statements']}); "
                        f"the {len(c.statements)} statements of the import were kept instead")
                self.notes.append(note)
                info["status"] = "done; imported statements kept"
            info["statements"] = len(self.character().statements)
            return info

        self._step("extract", inputs_hash(section, []), [out], run)

    def step_queries(self, char_file: Path) -> None:
        q = self.cfg["queries"]
        if not q["synthesize"]:
            return self._skip("queries", "[queries] synthesize = false")
        out = self.folder / "datasets" / "queries.jsonl"
        files = [Path(f) for f in q["files"]]
        key = inputs_hash({**q, "teacher": self.cfg["teacher"], "statements": self.character().statement_texts}, files)
        self._step("queries", key, [out], lambda: self._synth("queries", q["limit"], per_statement=q["per_statement"]))

    def queries(self) -> tuple[list[str], list[str]]:
        """(train, held-out) queries: synthesised, extra files, then generic ones when too few."""
        from .synth.common import language
        from .train.pairs import read_queries, split_queries

        q = self.cfg["queries"]
        found = read_queries(self.folder, [Path(f) for f in q["files"]])
        need = q["heldout"] + (q["max_train"] or max(4, q["heldout"]))
        if len(found) < need and q["generic"]:
            extra = [g for g in GENERIC_QUERIES[language(self.character())] if g not in found][: need - len(found)]
            if extra and not any(n.startswith(f"{len(found)} synthesised queries") for n in self.notes):
                self.notes.append(f"{len(found)} synthesised queries were too few; {len(extra)} generic questions "
                                  "were added ([queries] generic = true)")
            found += extra
        train, held = split_queries(found, q["heldout"])
        if q["max_train"]:
            train = train[: q["max_train"]]
        return train, held

    def step_discriminators(self, char_file: Path) -> None:
        d = self.cfg["discriminators"]
        if not d["enabled"]:
            return self._skip("discriminators", "disabled")
        from .train.discriminators import TrainConfig, train

        def run() -> dict[str, Any]:
            info: dict[str, Any] = {}
            for task in ("relevance", "nli"):
                info[f"{task}_rows"] = self._synth(task, d["limit"])["rows"]
                rows = self.folder / "datasets" / f"{task}.jsonl"
                metrics = train(TrainConfig(task=task, train_files=[rows], output_dir=self.folder / "discriminators"
                                            / task, init_from="shipped", epochs=d["epochs"]))
                info[f"{task}_dev"] = metrics.get("dev")
            self._scorer = None
            return info

        files = [self.folder / "datasets" / "queries.jsonl", char_file]
        self._step("discriminators", inputs_hash({**d, "teacher": self.cfg["teacher"]}, files),
                   [self.folder / "discriminators" / "nli"], run)

    def _lora(self) -> Any:
        from .train.common import LoraSettings, from_dict

        return from_dict(LoraSettings, self.cfg["lora"], "lora")

    def step_sft(self) -> Path | None:
        s = self.cfg["sft"]
        rows = self.folder / "datasets" / "sft.jsonl"
        have_rows = rows.is_file() and rows.stat().st_size > 0
        if s["enabled"] is False or (s["enabled"] == "auto" and not have_rows and not s["alpaca"]):
            why = "disabled" if s["enabled"] is False else "no experience rows (datasets/sft.jsonl) and no Alpaca data"
            if s["enabled"] == "auto":
                self.notes.append(f"SFT skipped: {why}; `rolecraft synth all` makes experience rows with a teacher")
            self._skip("sft", why)
            return None
        from .train.sft import SftConfig, train_sft

        target = self.folder / "adapters" / "sft"
        alpaca = [Path(p) for p in s["alpaca"]]
        cfg = SftConfig(output_dir=target, experiences=rows if have_rows else None, alpaca=alpaca,
                        alpaca_limit=s["alpaca_limit"] or None, model=self._model_ref(), lora=self._lora(),
                        steps=s["steps"], batch_size=s["batch_size"], grad_accum=s["grad_accum"],
                        learning_rate=s["learning_rate"], max_length=s["max_length"],
                        gradient_checkpointing=s["gradient_checkpointing"],
                        threads=self.cfg["model"]["threads"] or None)
        key = inputs_hash({**s, "lora": self.cfg["lora"], "model": self.cfg["model"]["name"]},
                          ([rows] if have_rows else []) + alpaca)
        self._step("sft", key, [target / "adapter_config.json"], lambda: self._train("sft", cfg, None, train_sft))
        return target

    def _train(self, kind: str, cfg: Any, pairs_file: Path | None, here: Callable[..., dict[str, Any]]) -> Any:
        """Train in this process, or under `[model] launch` (e.g. accelerate launch) in a child process."""
        launcher = self.cfg["model"]["launch"]
        if not launcher:
            from .train.pairs import read_jsonl

            return here(cfg, read_jsonl(pairs_file), self.progress) if pairs_file else here(cfg, self.progress)
        from .train.launch import launch, write_job

        self._llm_cache.clear()
        job = write_job(self.folder / "build" / f"{kind}-job.json", kind, cfg, pairs_file)
        self.log(f"{kind}: launching `{launcher}`")
        return launch(launcher, job)

    def _model_ref(self) -> str | None:
        name = self.cfg["model"]["name"]
        return None if name == "smollm2" else name

    def step_dpo(self, char_file: Path, parent: Path | None) -> Path | None:
        d = self.cfg["dpo"]
        if not d["enabled"]:
            self._skip("dpo", "disabled")
            return None
        from . import ooc
        from .train.dpo import DpoConfig, train_dpo
        from .train.pairs import PairConfig, make_pairs, sample_candidates, score_candidates, write_jsonl

        target = self.folder / "adapters" / "dpo"
        pairs_file = self.folder / "datasets" / "dpo_pairs.jsonl"
        cands_file = self.folder / "datasets" / "dpo_candidates.jsonl"
        pc = PairConfig(candidates=d["candidates"], temperature=d["temperature"], top_p=d["top_p"],
                        max_new_tokens=self.cfg["agent"]["max_new_tokens"], margin=d["margin"], ooc=d["ooc"],
                        batch_size=d["gen_batch_size"], max_pairs=d["max_pairs"] or None)
        cfg = DpoConfig(output_dir=target, model=self._model_ref(), parent=parent, lora=self._lora(), pairs=pc,
                        steps=d["steps"], batch_size=d["batch_size"], grad_accum=d["grad_accum"],
                        learning_rate=d["learning_rate"], beta=d["beta"], max_length=d["max_length"],
                        max_prompt_length=d["max_prompt_length"], gradient_checkpointing=d["gradient_checkpointing"],
                        threads=self.cfg["model"]["threads"] or None)
        cfg.check()

        def run() -> dict[str, Any]:
            train_q, _ = self.queries()
            c = self.character()
            agent = self.agent(self.llm(parent))
            groups = sample_candidates(agent, train_q, pc, self.progress)
            groups = score_candidates(groups, self.scorer(), c.statement_texts, c.name, progress=self.progress)
            write_jsonl(cands_file, [{k: v for k, v in g.items() if k != "replies"} for g in groups])
            pairs, skipped = make_pairs(groups, pc)
            write_jsonl(pairs_file, pairs)
            n = sum(len(g["candidates"]) for g in groups)
            stats = {"queries": len(groups), "candidates": n,
                     "candidates_ooc": sum(bool(x["ooc"]) for g in groups for x in g["candidates"]),
                     "pairs": len(pairs), **{f"skipped: {k}": v for k, v in skipped.items() if v}}
            self._llm_cache.clear()  # free the sampling model before training
            if not pairs:
                return {"status": "no pairs (nothing trained)", **stats}
            summary = self._train("dpo", cfg, pairs_file, train_dpo)
            return {**stats, "train": summary}

        parent_hash = file_hash(parent) if parent else None
        key = inputs_hash({**d, "lora": self.cfg["lora"], "agent": self.cfg["agent"], "queries": self.cfg["queries"],
                           "model": self.cfg["model"]["name"], "parent": parent_hash,
                           "discriminators": self.cfg["discriminators"]["enabled"]},
                          [char_file, self.folder / "datasets" / "queries.jsonl", Path(ooc.__file__)])
        self._step("dpo", key, [pairs_file], run)
        return target if (target / "adapter_config.json").is_file() else None

    def step_report(self, char_file: Path, sft: Path | None, dpo: Path | None) -> Path | None:
        r = self.cfg["report"]
        if not r["enabled"]:
            self._skip("report", "disabled")
            return None
        from . import ooc
        from .report import evaluate_stage, write_report
        from .train.pairs import read_jsonl

        out = self.folder / "reports" / "build.md"
        stages_spec = [("base", None)] + ([("sft", sft)] if sft else []) + ([("dpo", dpo)] if dpo else [])

        def run() -> dict[str, Any]:
            _, held = self.queries()
            stages = {}
            for name, adapter in stages_spec:
                self.log(f"report: evaluating {name} on {len(held)} held-out queries")
                stages[name] = evaluate_stage(self.agent(self.llm(adapter)), self.scorer(), held,
                                              self.cfg["agent"]["max_new_tokens"], self.progress)
            manifest = self._manifest()
            dpo_info = manifest.get("dpo", {})
            pair_stats = {k: v for k, v in dpo_info.items()
                          if k not in ("inputs", "finished", "train", "seconds", "notes")}
            timings = {k: v for k, v in self.timings.items()}
            for k, v in manifest.items():  # a skipped step reports the time of the run that made its output
                if k in timings and timings[k]["status"].startswith("skipped (unchanged") and "seconds" in v:
                    timings[k] = {**timings[k], "seconds": v["seconds"], "status": f"unchanged (ran {v['finished']})"}
            pairs = read_jsonl(self.folder / "datasets" / "dpo_pairs.jsonl")
            write_report(self.folder, self.character().name, stages, pairs, pair_stats, timings, self.notes,
                         r["examples"])
            return {"stages": {k: {kk: round(vv, 4) for kk, vv in v.items() if kk in
                                   ("apc_mean", "apc_low", "apc_high", "ooc_rate")} for k, v in stages.items()}}

        files = [char_file] + [p / "adapter_model.safetensors" for _, p in stages_spec if p]
        key = inputs_hash({**r, "agent": self.cfg["agent"], "queries": self.cfg["queries"],
                           "discriminators": self.cfg["discriminators"]["enabled"]},
                          files + [self.folder / "datasets" / "queries.jsonl", Path(ooc.__file__)])
        self._step("report", key, [out], run)
        return out


def build(ref: str, config: dict[str, Any], home: Path | None = None, force: bool = False, progress: bool = True,
          log: Callable[[str], None] = print) -> BuildResult:
    return Builder(ref, config, home, force, progress, log).run()
