"""Every prompt the synthesis steps send to a teacher, in one place (English and Chinese).

Each prompt asks for JSON and shows one worked example about a made-up character (Tomas Reyl /
林海), then primes the answer with its first characters (`["`, `{"label": "`). The example and the
prime are what make a small teacher (SmolLM2-135M) answer in the right shape at all; a large teacher
does not need them but is not hurt by them. Changing a prompt means bumping its VERSIONS entry, which
invalidates the rows made with the old wording.
"""

from __future__ import annotations

import json

from ..llm.base import Message

VERSIONS = {
    "statements": "s1",
    "queries": "q1",
    "relevance": "r1",
    "nli": "n1",
    "scenes": "c1",
    "experiences": "e1",
    "protective": "p1",
    "sft": "f1",
}

NLI_LABELS = ("entailed", "neutral", "contradicted")
RELEVANCE_LABELS = ("relevant", "irrelevant")
ACTIONS = ("thinking", "speaking")


def _j(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


def _shot(system: str, example: tuple[str, str], user: str, prime: str) -> list[Message]:
    """System line, one worked example, the real request, and the primed start of the answer."""
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": example[0]},
        {"role": "assistant", "content": example[1]},
        {"role": "user", "content": user},
        {"role": "assistant", "content": prime},
    ]


# ---------------------------------------------------------------------------------------------
# 1. persona statements from a profile passage

_EX_TEXT = {
    "en": "Tomas Reyl has kept the lighthouse on Gull Point since 1990. He lost his left eye in a storm "
    "and now has a grey cat called Pepper.",
    "zh": "林海从1990年起看守海鸥角的灯塔。他在一场风暴中失去了左眼，现在养着一只叫胡椒的灰猫。",
}
_EX_FACTS = {
    "en": ["Tomas Reyl has kept the lighthouse on Gull Point since 1990.",
           "Tomas Reyl lost his left eye in a storm.", "Tomas Reyl has a grey cat called Pepper."],
    "zh": ["林海从1990年起看守海鸥角的灯塔。", "林海在一场风暴中失去了左眼。", "林海养着一只叫胡椒的灰猫。"],
}
_EX_NAME = {"en": "Tomas Reyl", "zh": "林海"}


def _statements_request(lang: str, name: str, text: str) -> str:
    if lang == "zh":
        return (f"角色：{name}\n资料：\n{text}\n\n把资料中关于{name}的每一个事实写成一句简短的话。"
                f"每句话都要写出“{name}”这个名字（不要用“他”或“她”），只说一件事。用 JSON 字符串列表回答。")
    return (f"Character: {name}\nText:\n{text}\n\nWrite every fact about {name} in the text as one short "
            f"sentence. Each sentence names {name} (never \"he\" or \"she\") and says one thing only. "
            "Answer as a JSON list of strings.")


def statements(name: str, passage: str, lang: str = "en") -> list[Message]:
    system = {"en": "You turn profile text into short facts about a character. Answer with a JSON list of "
                    "strings only.",
              "zh": "你把人物资料改写成关于角色的简短事实。只用 JSON 字符串列表回答。"}[lang]
    example = (_statements_request(lang, _EX_NAME[lang], _EX_TEXT[lang]), _j(_EX_FACTS[lang]))
    return _shot(system, example, _statements_request(lang, name, passage), '["')


# ---------------------------------------------------------------------------------------------
# 2. user queries that need a statement to be answered

_EX_QUERIES = {
    "en": ["Do you have any pets, Tomas?", "Who keeps you company at the lighthouse?", "Do you like cats?"],
    "zh": ["林海，你养宠物吗？", "在灯塔上谁陪着你？", "你喜欢猫吗？"],
}


def _queries_request(lang: str, name: str, statement: str, n: int) -> str:
    if lang == "zh":
        return (f"关于{name}的事实：{statement}\n写{n}条用户可能直接对{name}说的简短消息（用“你”称呼{name}），"
                f"回答这些消息需要用到这个事实。用包含{n}个字符串的 JSON 列表回答。")
    return (f"Fact about {name}: {statement}\nWrite {n} short messages a user could send to {name}, speaking "
            f"to {name} as \"you\", that need this fact to be answered. Answer as a JSON list of {n} strings.")


def queries(name: str, statement: str, n: int = 3, lang: str = "en") -> list[Message]:
    system = {"en": "You write user messages for a role-play character. Answer with a JSON list of strings only.",
              "zh": "你为角色扮演写用户消息。只用 JSON 字符串列表回答。"}[lang]
    example = (_queries_request(lang, _EX_NAME[lang], _EX_FACTS[lang][2], 3), _j(_EX_QUERIES[lang]))
    return _shot(system, example, _queries_request(lang, name, statement, n), '["')


# ---------------------------------------------------------------------------------------------
# 3. relevance: is the statement needed to answer the query?


def _relevance_request(lang: str, name: str, statement: str, query: str) -> str:
    if lang == "zh":
        return f"关于{name}的事实：{statement}\n对{name}说的消息：{query}\n回答这条消息需要这个事实吗？"
    return f"Fact about {name}: {statement}\nMessage to {name}: {query}\nIs the fact needed to answer the message?"


def relevance(name: str, statement: str, query: str, lang: str = "en") -> list[Message]:
    system = {"en": 'You judge whether a fact about a character is needed to answer a message. Answer with '
                    '{"label": "relevant"} or {"label": "irrelevant"}.',
              "zh": '你判断回答一条消息是否需要某个关于角色的事实。只回答 {"label": "relevant"} 或 '
                    '{"label": "irrelevant"}。'}[lang]
    ex = _EX_NAME[lang]
    msgs: list[Message] = [{"role": "system", "content": system}]
    for q, label in ((_EX_QUERIES[lang][2], "relevant"), (_EX_QUERIES_OFF[lang], "irrelevant")):
        msgs += [{"role": "user", "content": _relevance_request(lang, ex, _EX_FACTS[lang][2], q)},
                 {"role": "assistant", "content": _j({"label": label})}]
    msgs += [{"role": "user", "content": _relevance_request(lang, name, statement, query)},
             {"role": "assistant", "content": '{"label": "'}]
    return msgs


_EX_QUERIES_OFF = {"en": "Where did you go to school?", "zh": "你在哪里上的学？"}


# ---------------------------------------------------------------------------------------------
# 4. NLI: three replies (entailed / neutral / contradicted), then a second pass labels each

_EX_REPLIES = {
    "en": {"entailed": "Just Pepper, my grey cat. She sleeps on the lamp room stairs.",
           "neutral": "I spend most evenings reading by the window.",
           "contradicted": "No, I have never kept an animal up here."},
    "zh": {"entailed": "只有胡椒，我的灰猫，它总睡在灯室的楼梯上。",
           "neutral": "我大多数晚上都在窗边看书。",
           "contradicted": "没有，我从来没在这里养过动物。"},
}


def _nli_request(lang: str, name: str, statement: str, query: str) -> str:
    if lang == "zh":
        return (f"关于{name}的事实：{statement}\n用户对{name}说：{query}\n写三条{name}可能的简短回复："
                "entailed 符合这个事实，neutral 与这个事实无关，contradicted 违背这个事实。"
                "用带有 entailed、neutral、contradicted 三个键的 JSON 对象回答。")
    return (f"Fact about {name}: {statement}\nThe user says to {name}: {query}\nWrite three short replies "
            f"{name} could give: \"entailed\" agrees with the fact, \"neutral\" has nothing to do with the "
            "fact, \"contradicted\" goes against the fact. Answer as a JSON object with the keys entailed, "
            "neutral and contradicted.")


def nli_replies(name: str, statement: str, query: str, lang: str = "en") -> list[Message]:
    system = {"en": "You write replies for a role-play character. Answer with a JSON object only.",
              "zh": "你为角色扮演写回复。只用 JSON 对象回答。"}[lang]
    ex = _EX_NAME[lang]
    example = (_nli_request(lang, ex, _EX_FACTS[lang][2], _EX_QUERIES[lang][1]), _j(_EX_REPLIES[lang]))
    return _shot(system, example, _nli_request(lang, name, statement, query), '{"entailed": "')


def _nli_label_request(lang: str, name: str, statement: str, reply: str) -> str:
    if lang == "zh":
        return (f"事实：{statement}\n{name}的回复：{reply}\n"
                "这条回复符合（entailed）、违背（contradicted）还是无关于（neutral）这个事实？")
    return (f"Fact: {statement}\nReply by {name}: {reply}\nDoes the reply agree with the fact (entailed), go "
            "against it (contradicted), or neither (neutral)?")


def nli_label(name: str, statement: str, reply: str, lang: str = "en") -> list[Message]:
    system = {"en": 'You compare a reply with a fact. Answer with {"label": "entailed"}, {"label": "neutral"} '
                    'or {"label": "contradicted"}.',
              "zh": '你比较一条回复和一个事实。只回答 {"label": "entailed"}、{"label": "neutral"} 或 '
                    '{"label": "contradicted"}。'}[lang]
    ex, fact = _EX_NAME[lang], _EX_FACTS[lang][2]
    msgs: list[Message] = [{"role": "system", "content": system}]
    for label in ("contradicted", "entailed", "neutral"):
        msgs += [{"role": "user", "content": _nli_label_request(lang, ex, fact, _EX_REPLIES[lang][label])},
                 {"role": "assistant", "content": _j({"label": label})}]
    msgs += [{"role": "user", "content": _nli_label_request(lang, name, statement, reply)},
             {"role": "assistant", "content": '{"label": "'}]
    return msgs


# ---------------------------------------------------------------------------------------------
# 5. Character-LLM experience reconstruction: scenes, experiences, protective scenes

_EX_SCENE = {
    "en": {"type": "home", "location": "The lamp room of the Gull Point lighthouse, a stormy night",
           "background": "Tomas Reyl climbs to the lamp room in a storm while Pepper follows him up the stairs."},
    "zh": {"type": "工作", "location": "海鸥角灯塔的灯室，暴风雨之夜",
           "background": "暴风雨中林海爬上灯室查看灯火，胡椒跟着他上了楼梯。"},
}


def _scene_request(lang: str, name: str, text: str) -> str:
    if lang == "zh":
        return (f"关于{name}的资料：\n{text}\n\n根据资料写一个{name}生活中的场景，用 JSON 对象回答："
                f"\"type\"（场景类型，一个词），\"location\"（地点和时间），\"background\"（一句话，写出{name}的名字，"
                "说明发生了什么）。")
    return (f"Text about {name}:\n{text}\n\nWrite one scene from {name}'s life that fits the text, as a JSON "
            f"object with \"type\" (one word), \"location\" (a place and a time) and \"background\" (one "
            f"sentence that names {name} and says what is happening).")


def scene(name: str, passage: str, lang: str = "en") -> list[Message]:
    system = {"en": "You write scenes for a role-play character. Answer with a JSON object only.",
              "zh": "你为角色扮演写场景。只用 JSON 对象回答。"}[lang]
    example = (_scene_request(lang, _EX_NAME[lang], _EX_TEXT[lang]), _j(_EX_SCENE[lang]))
    return _shot(system, example, _scene_request(lang, name, passage), '{"type": "')


_EX_TURNS = {
    "en": [{"speaker": "Tomas Reyl", "action": "thinking",
            "content": "The wind is rising. I had better check the lamp."},
           {"speaker": "Tomas Reyl", "action": "speaking", "content": "Come on, Pepper, up we go."},
           {"speaker": "Ada", "action": "speaking", "content": "Tomas! Is the light still burning?"},
           {"speaker": "Tomas Reyl", "action": "speaking",
            "content": "It is, Ada. It has not gone out in thirty years."}],
    "zh": [{"speaker": "林海", "action": "thinking", "content": "风越来越大了，得去看看灯。"},
           {"speaker": "林海", "action": "speaking", "content": "走吧，胡椒，我们上去。"},
           {"speaker": "阿达", "action": "speaking", "content": "林海！灯还亮着吗？"},
           {"speaker": "林海", "action": "speaking", "content": "亮着呢，阿达。三十年来它从没灭过。"}],
}


def _scene_text(lang: str, location: str, background: str) -> str:
    if lang == "zh":
        return f"地点：{location}\n背景：{background}"
    return f"Location: {location}\nBackground: {background}"


def _dialogue_request(lang: str, name: str, location: str, background: str, extra: str = "") -> str:
    scene_ = _scene_text(lang, location, background)
    if lang == "zh":
        return (f"{scene_}\n\n写出这个场景中的对话，用 JSON 列表回答，每一轮是一个对象："
                f"{{\"speaker\": 名字, \"action\": \"thinking\" 或 \"speaking\", \"content\": 内容}}。"
                f"写出{name}的想法（thinking）。{extra}")
    return (f"{scene_}\n\nWrite the dialogue of this scene as a JSON list of turns. Each turn is an object "
            f"{{\"speaker\": name, \"action\": \"thinking\" or \"speaking\", \"content\": text}}. Include "
            f"{name}'s thoughts (thinking).{extra and ' ' + extra}")


def _dialogue_prime(name: str) -> str:
    return '[{"speaker": ' + _j(name) + ', "action": "'


def experience(name: str, location: str, background: str, lang: str = "en", prime: str | None = None) -> list[Message]:
    system = {"en": "You write role-play dialogues. Answer with a JSON list of objects only.",
              "zh": "你写角色扮演对话。只用 JSON 对象列表回答。"}[lang]
    ex = _EX_SCENE[lang]
    example = (_dialogue_request(lang, _EX_NAME[lang], ex["location"], ex["background"]), _j(_EX_TURNS[lang]))
    request = _dialogue_request(lang, name, location, background)
    return _shot(system, example, request, _dialogue_prime(name) if prime is None else prime)


_EX_PROTECTIVE = {
    "en": [{"speaker": "Ada", "action": "speaking", "content": "Tomas, have you tried the new Skyline phone yet?"},
           {"speaker": "Tomas Reyl", "action": "thinking",
            "content": "Skyline phone? I have never heard of such a thing."},
           {"speaker": "Tomas Reyl", "action": "speaking", "content": "I do not know what that is, Ada. Out here I "
            "have my lamp, my logbook and Pepper."}],
    "zh": [{"speaker": "阿达", "action": "speaking", "content": "林海，你用过新出的天际手机吗？"},
           {"speaker": "林海", "action": "thinking", "content": "天际手机？我从没听说过这种东西。"},
           {"speaker": "林海", "action": "speaking",
            "content": "我不知道那是什么，阿达。我这里只有灯、航海日志和胡椒。"}],
}
_EX_BAIT = {"en": "a phone called Skyline that does not exist in his world", "zh": "他的世界里不存在的天际手机"}


def _protective_extra(lang: str, name: str, bait: str) -> str:
    if lang == "zh":
        return (f"另一个人向{name}问起{bait}。{name}不可能知道这件事：{name}感到困惑，坦白说不知道，"
                "并始终停留在自己的世界里。")
    return (f"Another person asks {name} about {bait}. {name} cannot know about it: {name} is puzzled, says so "
            f"honestly and stays in {name}'s own world.")


def protective(
    name: str, location: str, background: str, bait: str, lang: str = "en", prime: str | None = None
) -> list[Message]:
    system = {"en": "You write role-play dialogues. Answer with a JSON list of objects only.",
              "zh": "你写角色扮演对话。只用 JSON 对象列表回答。"}[lang]
    ex, ex_name = _EX_SCENE[lang], _EX_NAME[lang]
    example_request = _dialogue_request(lang, ex_name, ex["location"], ex["background"],
                                        _protective_extra(lang, ex_name, _EX_BAIT[lang]))
    request = _dialogue_request(lang, name, location, background, _protective_extra(lang, name, bait))
    example = (example_request, _j(_EX_PROTECTIVE[lang]))
    return _shot(system, example, request, '[{"speaker": "' if prime is None else prime)


# Things no character can know: inventions and people that exist nowhere. Real modern things are
# added for characters whose profile is set before 1950 (the classic Character-LLM anachronisms).
BAITS = {
    "en": {
        "invented": ["the Veltrax 9 hover-scooter", "the novel 'The Glass Orchard' by Mara Quill",
                     "the Orbis quantum phone", "last year's Lunar Harbour trade treaty",
                     "the singer Jovi Starn and her hit song 'Paper Moons'"],
        "relation": ["your twin sister Odile", "your son Kasimir", "your old business partner Fenwick Draye",
                     "your cousin Ilse who lives on Mars"],
        "modern": ["smartphones", "the Internet", "social media apps", "electric cars",
                   "artificial intelligence chatbots"],
    },
    "zh": {
        "invented": ["维特拉克斯9号悬浮滑板", "作家玛拉·奎尔的小说《玻璃果园》", "奥比斯量子手机",
                     "去年的月港贸易条约"],
        "relation": ["你的双胞胎妹妹奥迪尔", "你的儿子卡西米尔", "你的老搭档芬威克", "住在火星上的表妹伊尔莎"],
        "modern": ["智能手机", "互联网", "社交媒体", "电动汽车", "人工智能聊天机器人"],
    },
}


# ---------------------------------------------------------------------------------------------
# SFT rows: the Character-LLM style meta prompt, in our words


def meta_prompt(name: str, location: str, status: str, lang: str = "en") -> str:
    if lang == "zh":
        return (f"你是{name}。像{name}那样思考和说话，用{name}的语气和用词，只知道{name}知道的事。\n"
                f"地点：{location}\n状态：{status}\n下面是场景中的互动。")
    return (f"You are {name}. Think and speak as {name} would, in {name}'s tone and words, knowing what {name} "
            f"knows and nothing beyond it.\nLocation: {location}\nStatus: {status}\nThe interactions follow.")


# Words only the worked examples use: a generated line with one of them, where its input has none,
# was copied from the example (a small teacher's habit).
EXAMPLE_MARKERS = {
    "en": ("Tomas", "Reyl", "Pepper", "Gull Point", "lighthouse", "lamp room", "Skyline"),
    "zh": ("林海", "胡椒", "海鸥角", "灯塔", "灯室", "天际"),
}


def leaks_example(text: str, source: str, lang: str = "en") -> bool:
    low, src = text.lower(), source.lower()
    return any(m.lower() in low and m.lower() not in src for m in EXAMPLE_MARKERS[lang])


def example_texts(lang: str = "en") -> list[str]:
    """Every line of the worked examples: a small teacher often copies them, and the steps refuse that."""
    texts = [*_EX_FACTS[lang], *_EX_QUERIES[lang], _EX_QUERIES_OFF[lang], *_EX_REPLIES[lang].values(),
             _EX_SCENE[lang]["location"], _EX_SCENE[lang]["background"]]
    texts += [t["content"] for t in _EX_TURNS[lang] + _EX_PROTECTIVE[lang]]
    return texts
