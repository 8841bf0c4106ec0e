"""A recall-quality set: a few hundred facts about made-up people and questions whose answer
is exactly one of them. Used by the test suite (hit@5 floor) and by bench/bench_memory.py."""

from __future__ import annotations

from dataclasses import dataclass

NAMES = ("Alice", "Bruno", "Chen", "Dalia", "Emeka", "Farah", "Goran", "Hana", "Ivan", "Jun",
         "Kofi", "Lena", "Mateo", "Nadia", "Oskar", "Priya", "Quinn", "Rosa", "Sami", "Tariq",
         "Uma", "Viktor", "Wen", "Ximena", "Yusuf", "Zoe", "Arjun", "Beatriz", "Cyril",
         "Dmitri")  # fmt: skip
# (fact template, question template, values): each person gets one value of every attribute.
ATTRIBUTES = (
    ("{n}'s dog is called {v}.", "What is the name of {n}'s dog?",
     ("Rex", "Bella", "Max", "Luna", "Rocky", "Daisy", "Milo", "Coco", "Toby", "Nala")),
    ("{n} works as a {v}.", "What is {n}'s job?",
     ("nurse", "carpenter", "pilot", "teacher", "chemist", "lawyer", "baker", "architect",
      "plumber", "journalist")),
    ("{n} lives in {v}.", "Which city does {n} live in?",
     ("Lyon", "Osaka", "Lagos", "Lima", "Oslo", "Cairo", "Quito", "Perth", "Riga", "Porto")),
    ("{n} is allergic to {v}.", "What is {n} allergic to?",
     ("peanuts", "shellfish", "pollen", "penicillin", "cats", "latex", "eggs", "soy",
      "wasps", "dust")),
    ("{n}'s favourite colour is {v}.", "What colour does {n} like best?",
     ("teal", "crimson", "amber", "violet", "olive", "navy", "coral", "ivory", "maroon",
      "lime")),
    ("{n} plays the {v}.", "Which instrument does {n} play?",
     ("cello", "violin", "drums", "flute", "piano", "trumpet", "harp", "oboe", "banjo",
      "sitar")),
    ("{n} drives a {v}.", "What car does {n} drive?",
     ("Volvo", "Fiat", "Tesla", "Toyota", "Jeep", "Skoda", "Mini", "Saab", "Honda", "Lada")),
    ("{n}'s birthday is in {v}.", "When is {n}'s birthday?",
     ("January", "February", "March", "April", "May", "June", "July", "August", "September",
      "October")),
    ("{n} speaks {v} at home.", "Which language does {n} speak at home?",
     ("Swahili", "Polish", "Tamil", "Greek", "Korean", "Dutch", "Turkish", "Hebrew",
      "Finnish", "Tagalog")),
    ("{n}'s favourite food is {v}.", "What food does {n} love most?",
     ("ramen", "paella", "tacos", "pierogi", "curry", "falafel", "lasagne", "sushi",
      "goulash", "pho")),
)  # fmt: skip


@dataclass(frozen=True)
class Question:
    text: str
    answer: str
    """The fact that answers it (exactly one of `facts()`)."""


def facts_and_questions() -> tuple[list[str], list[Question]]:
    """300 facts (30 people x 10 attributes) and one question per fact."""
    facts: list[str] = []
    questions: list[Question] = []
    for p, name in enumerate(NAMES):
        for a, (fact, question, values) in enumerate(ATTRIBUTES):
            text = fact.format(n=name, v=values[(p * 7 + a * 3) % len(values)])
            facts.append(text)
            questions.append(Question(question.format(n=name), text))
    return facts, questions
