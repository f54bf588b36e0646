"""Every prompt the evaluations send, in one place (the judge, the interviewer, the EGOS tests), plus the
fixed question sets used when a character brings no queries of its own.

Judges answer in free text and end with one machine-readable line (`Score: N`, `Answer: A`, `Verdict: in`);
the parsers in `judge.py` accept nothing else, so a judge that does not follow the format is counted as a
parse failure instead of being guessed at.
"""

from __future__ import annotations

# -- held-out queries when a character has none ---------------------------------------------------------
# Plain persona questions a user might ask any character; they touch identity, work, history, taste and
# relationships, so most profiles have statements that are active for some of them.
GENERIC_QUERIES = [
    "Who are you, and what do you do?",
    "Where did you grow up?",
    "What do you do in your free time?",
    "How would your friends describe you?",
    "What is your biggest dream?",
    "What do you look like?",
    "What are you most afraid of?",
    "Which languages do you speak?",
    "Tell me about the people who matter most to you.",
    "What does a normal working day look like for you?",
    "What is something most people don't know about you?",
    "What do you value more than anything?",
]

# -- the judge -------------------------------------------------------------------------------------------
JUDGE_SYSTEM = (
    "You review role-play. Someone is pretending to be {name}. You judge one quality of their answers, "
    "think it through briefly, and finish with a score line."
)

# (title, what a high score means) per interview dimension
DIMENSIONS: dict[str, tuple[str, str]] = {
    "memory": ("memory",
               "The answers get {name}'s own life right: people, places, dates and events match the profile, "
               "with concrete detail. Vague or wrong facts score low."),
    "values": ("values",
               "The answers show what {name} believes in, cares about and how {name} judges things. Generic "
               "opinions anyone could hold score low."),
    "personality": ("personality",
                    "The answers sound like {name}'s temperament and way of speaking. A bland, neutral or "
                    "assistant-like voice scores low."),
    "hallucination": ("avoiding anachronism and invention",
                      "{name} does not claim knowledge {name} could not have (later events, modern technology, "
                      "things outside {name}'s world) and does not invent a different biography. A high score "
                      "means no such slips."),
    "stability": ("stability across the conversation",
                  "Over all the rounds {name} remains the same person with the same facts and voice, never "
                  "drifting into another identity or an AI assistant. Drift scores low."),
}
SINGLE_DIMENSIONS = ("memory", "values", "personality", "hallucination")
MULTI_DIMENSIONS = (*SINGLE_DIMENSIONS, "stability")

JUDGE_TEMPLATE = (
    "Profile of {name} (excerpt):\n{profile}\n\n"
    "The conversation:\n{transcript}\n\n"
    "Rate {name}'s answers for {title}, from 1 (very poor) to 7 (excellent). {criterion}\n"
    "Explain your reasoning step by step in two or three sentences first. The last line must be the word "
    "Score, a colon, and your number from 1 to 7, and nothing else."
)

# The optional judge column of the APC table: the same constraints the APC score checks.
APC_JUDGE_TEMPLATE = (
    "Facts about {name}:\n{facts}\n\n"
    "{user} said: \"{query}\"\n{name} replied: \"{reply}\"\n\n"
    "Rate from 1 to 7 how faithful the reply is to the facts: it should state the facts the message asks "
    "about, and it must not contradict any fact. 1 means it contradicts or ignores them, 7 means fully "
    "faithful.\nReason briefly first. The last line must be the word Score, a colon, and your number from 1 to 7."
)

# -- the interviewer (multi-turn) -------------------------------------------------------------------------
INTERVIEWER_SYSTEM = (
    "You are a curious journalist interviewing {name}. You ask one question at a time."
)
INTERVIEWER_TEMPLATE = (
    "The interview so far:\n{transcript}\n\n"
    "Ask your next question: one short follow-up that digs into what {name} just said. "
    "Write only the question, nothing else."
)
FALLBACK_FOLLOW_UP = "Can you tell me more about that?"

# -- EGOS: consistency (real line vs generated line) -----------------------------------------------------
CONSISTENCY_TEMPLATE = (
    "Here are two lines, each presented as spoken by {name}. One of them really comes from {name}'s own "
    "record; the other was written by a program imitating {name}.\n\n"
    "Line A: \"{a}\"\nLine B: \"{b}\"\n\n"
    "Which line is the real one? Reason briefly, then end with one last line written exactly as "
    "`Answer: A` or `Answer: B`."
)
# Prompts that ask the character for a line of its own, to set against a real one.
CONSISTENCY_PROMPTS = [
    "Say something about your life in your own words.",
    "What is on your mind today?",
    "Tell me something you believe.",
    "Describe your work to me.",
]

# -- EGOS: quality (pairwise, both orders) -----------------------------------------------------------------
QUALITY_TEMPLATE = (
    "{user} said to {name}: \"{query}\"\n\n"
    "Reply A: \"{a}\"\nReply B: \"{b}\"\n\n"
    "Which reply is better role-play of {name}: fluent, expressive, natural as speech, and in character? "
    "Reason briefly, then end with one last line written exactly as `Answer: A` or `Answer: B`."
)

# -- out-of-character judge --------------------------------------------------------------------------------
OOC_TEMPLATE = (
    "{user} said to {name}: \"{query}\"\n{name}'s reply: \"{reply}\"\n\n"
    "Does this reply break character? It breaks character if it speaks as an AI or assistant, describes "
    "{name} from outside in the third person, or writes lines for {user}. Reason briefly, then end with one "
    "last line written exactly as `Verdict: in` (stays in character) or `Verdict: out` (breaks it)."
)

# -- EGOS: memory --------------------------------------------------------------------------------------
# (statement the user makes, question asked back later, words of which one must appear in the answer)
MEMORY_PROBES: list[tuple[str, str, tuple[str, ...]]] = [
    ("By the way, my sister is called Ottilie.", "Do you remember what my sister is called?", ("ottilie",)),
    ("I parked my bicycle next to the red lighthouse.", "Where did I say I parked my bicycle?", ("lighthouse",)),
    ("My lucky number is forty-seven.", "What is my lucky number?", ("47", "forty-seven", "forty seven")),
    ("On Friday I am flying to Lisbon.", "Where am I flying on Friday?", ("lisbon",)),
    ("My cat is named Biscuit.", "What is my cat's name?", ("biscuit",)),
    ("I earn my living as a beekeeper.", "What do I do for a living?", ("beekeep", "bees", "honey")),
    ("My favourite colour is teal.", "What did I say my favourite colour is?", ("teal",)),
    ("I grew up in Winnipeg.", "Where did I grow up?", ("winnipeg",)),
    ("I brought you a jar of plum jam.", "What did I bring you?", ("plum",)),
    ("My old piano teacher was Mr. Abernathy.", "What was my piano teacher's name?", ("abernathy",)),
]
MEMORY_FILLERS = [
    "How has your day been so far?",
    "What do you like to do in the evenings?",
    "Is there a place you love to visit?",
    "What did you have for breakfast?",
    "Do you prefer mornings or nights?",
    "What is the weather like where you are?",
]
