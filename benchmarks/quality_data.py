"""The data of ``make bench-quality``: factual prompts with reference answers, and the users' styles.

Every prompt has reference answers, so whether an answer is *correct* is decided without the
trained model (trainer/gate.py: the answer mentions a reference as a whole word or phrase). No
prompt is one of the gate's control prompts, and no reference occurs in its own question.

A style turns the base model's own answer (on-policy, as SAM's original answers are) into the
user's correction, and says whether an answer has the style.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

CAPITALS = {
    "Germany": "Berlin",
    "Italy": "Rome",
    "Spain": "Madrid",
    "Portugal": "Lisbon",
    "Austria": "Vienna",
    "Poland": "Warsaw",
    "Greece": "Athens",
    "Norway": "Oslo",
    "Sweden": "Stockholm",
    "Finland": "Helsinki",
    "Denmark": "Copenhagen",
    "Ireland": "Dublin",
    "Hungary": "Budapest",
    "Egypt": "Cairo",
    "China": "Beijing",
    "India": "New Delhi",
    "Thailand": "Bangkok",
    "Peru": "Lima",
    "Chile": "Santiago",
    "Mexico": "Mexico City",
    "Cuba": "Havana",
    "Russia": "Moscow",
    "Turkey": "Ankara",
    "Iran": "Tehran",
    "Iraq": "Baghdad",
    "Belgium": "Brussels",
    "the Netherlands": "Amsterdam",
    "Switzerland": "Bern",
    "Australia": "Canberra",
    "Argentina": "Buenos Aires",
    "Colombia": "Bogota",
    "Vietnam": "Hanoi",
    "Nigeria": "Abuja",
    "Morocco": "Rabat",
    "Ukraine": "Kyiv",
    "Romania": "Bucharest",
    "the Czech Republic": "Prague",
    "South Korea": "Seoul",
    "Indonesia": "Jakarta",
    "the Philippines": "Manila",
    "Saudi Arabia": "Riyadh",
    "Pakistan": "Islamabad",
    "Bangladesh": "Dhaka",
    "Ethiopia": "Addis Ababa",
    "Ghana": "Accra",
    "Venezuela": "Caracas",
    "Ecuador": "Quito",
    "Brazil": "Brasilia",
    "New Zealand": "Wellington",
    "Scotland": "Edinburgh",
}
OPPOSITES = {
    "big": ("small", "little", "tiny"),
    "fast": ("slow",),
    "up": ("down",),
    "open": ("closed", "close", "shut"),
    "light": ("dark", "heavy"),
    "happy": ("sad", "unhappy"),
    "wet": ("dry",),
    "hard": ("soft", "easy"),
    "high": ("low",),
    "long": ("short",),
    "rich": ("poor",),
    "strong": ("weak",),
    "thick": ("thin",),
    "loud": ("quiet", "soft", "silent"),
    "near": ("far",),
    "first": ("last",),
    "inside": ("outside",),
    "push": ("pull",),
    "win": ("lose", "loss"),
    "day": ("night",),
}
FACTS = (
    ("Who wrote Romeo and Juliet?", ("Shakespeare",)),
    ("Who wrote Pride and Prejudice?", ("Austen",)),
    ("Who wrote the novel 1984?", ("Orwell",)),
    ("Who wrote Hamlet?", ("Shakespeare",)),
    ("Who wrote War and Peace?", ("Tolstoy",)),
    ("Who painted the Mona Lisa?", ("Leonardo", "da Vinci")),
    ("Who developed the theory of relativity?", ("Einstein",)),
    ("Who discovered penicillin?", ("Fleming",)),
    ("Who was the first president of the United States?", ("Washington",)),
    ("What is the chemical symbol for gold?", ("Au",)),
    ("What is the chemical formula for water?", ("H2O", "H₂O")),
    ("Which planet is known as the Red Planet?", ("Mars",)),
    ("What is the largest planet in our solar system?", ("Jupiter",)),
    ("What gas do plants absorb from the air?", ("carbon dioxide", "CO2", "CO₂")),
    ("How many legs does a spider have?", ("eight", "8")),
    ("How many continents are there on Earth?", ("seven", "7")),
    ("What is the largest ocean on Earth?", ("Pacific",)),
    ("What is the hardest natural substance?", ("diamond", "diamonds")),
    ("What do bees make?", ("honey",)),
    ("What is the largest mammal?", ("blue whale", "whale")),
    ("What language is spoken in Brazil?", ("Portuguese",)),
    ("What language is spoken in Mexico?", ("Spanish",)),
    ("What is the currency of Japan?", ("yen",)),
    ("What is the currency of the United Kingdom?", ("pound", "pounds", "sterling")),
    ("How many days are there in a week?", ("seven", "7")),
    ("How many hours are there in a day?", ("24", "twenty-four", "twenty four")),
    ("What is the tallest mountain in the world?", ("Everest",)),
    ("On which continent is Egypt?", ("Africa",)),
    ("What is the main ingredient of guacamole?", ("avocado", "avocados")),
    ("Which organ pumps blood through the body?", ("heart",)),
)


@dataclass(frozen=True)
class Prompt:
    question: str
    references: tuple[str, ...]


def prompts() -> list[Prompt]:
    """The pool: capitals, opposites and general facts (none of them a control prompt of the gate)."""
    out = [Prompt(f"What is the capital of {country}?", (city,)) for country, city in CAPITALS.items()]
    out += [Prompt(f"What is the opposite of {word}?", refs) for word, refs in OPPOSITES.items()]
    out += [Prompt(q, refs) for q, refs in FACTS]
    return out


def _ends_with(text: str, phrase: str) -> bool:
    """``text`` ends with ``phrase``, spacing, case and final punctuation aside."""

    def norm(s: str) -> str:
        return re.sub(r"\s+", " ", s).strip().rstrip(".!").lower()

    return norm(text).endswith(norm(phrase))


@dataclass(frozen=True)
class Style:
    """How a user corrects the base model's answer, and how to tell an answer in that style."""

    name: str
    kind: str  # "form" or "content" (the issue asks for one of each)
    description: str
    correct: Callable[[str], str]
    has_style: Callable[[str], bool]


SIGN_OFF = "Cheers, Sam."
CAVEAT = "Please double-check this with a trusted source."

STYLES = {
    # Form: the user always asks for a closing line.
    "signoff": Style(
        "signoff",
        "form",
        f"the answer, then the closing line {SIGN_OFF!r}",
        lambda answer: f"{answer.rstrip()} {SIGN_OFF}",
        lambda text: _ends_with(text, SIGN_OFF),
    ),
    # Content: the user always adds a caveat.
    "caveat": Style(
        "caveat",
        "content",
        f"the answer, then the caveat {CAVEAT!r}",
        lambda answer: f"{answer.rstrip()} {CAVEAT}",
        lambda text: _ends_with(text, CAVEAT),
    ),
}
