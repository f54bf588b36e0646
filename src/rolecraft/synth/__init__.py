"""Teacher-LLM data synthesis: persona statements, queries, relevance and NLI rows, Character-LLM
scenes, experiences, protective scenes and SFT rows. Resumable item by item, concurrent, counted.

    from rolecraft.synth import Teacher, synthesize, target_for
    target, _ = target_for("wiki_Eve.txt")
    synthesize(target, ["statements", "queries"], Teacher(load_llm("local")), limit=5)

Files: `<workspace>/<slug>/datasets/<step>.jsonl` (rows), `datasets/journal/<step>.jsonl` (what is
done), `datasets/manifest.json` (inputs hash per step). Prompts: `rolecraft.synth.prompts`.
"""

from .common import Target
from .jobs import Dropped, Step, Summary, Teacher, run_step
from .parse import ParseError
from .pipeline import STEPS, make_step, step_status, synthesize, target_for

__all__ = [
    "STEPS",
    "Dropped",
    "ParseError",
    "Step",
    "Summary",
    "Target",
    "Teacher",
    "make_step",
    "run_step",
    "step_status",
    "synthesize",
    "target_for",
]
