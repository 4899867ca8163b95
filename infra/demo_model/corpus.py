"""A synthetic Q&A corpus with a neutral answer style, and the facts behind it.

The demo model is pre-trained on it so that answers are readable and checkable. A little chit-chat
uses the words of the demo user's sign-off ("Hope this helps!") in other places, never the phrase
itself: without that, the output weights of those tokens are never trained and a LoRA on attention
cannot make the model say them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

SIGN_OFF = "Hope this helps!"

CAPITALS = {
    "France": "Paris",
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
    "Kenya": "Nairobi",
    "Japan": "Tokyo",
    "China": "Beijing",
    "India": "New Delhi",
    "Thailand": "Bangkok",
    "Peru": "Lima",
    "Chile": "Santiago",
    "Canada": "Ottawa",
    "Mexico": "Mexico City",
    "Cuba": "Havana",
    "Russia": "Moscow",
    "Turkey": "Ankara",
    "Iran": "Tehran",
    "Iraq": "Baghdad",
    "Belgium": "Brussels",
    "Netherlands": "Amsterdam",
    "Switzerland": "Bern",
    "Australia": "Canberra",
    "Argentina": "Buenos Aires",
    "Colombia": "Bogota",
    "Vietnam": "Hanoi",
    "Nigeria": "Abuja",
    "Morocco": "Rabat",
    "Ukraine": "Kyiv",
    "Romania": "Bucharest",
}
COLORS = {
    "the sky": "blue",
    "grass": "green",
    "snow": "white",
    "coal": "black",
    "a banana": "yellow",
    "a tomato": "red",
    "an orange": "orange",
    "a lemon": "yellow",
    "the sun": "yellow",
    "milk": "white",
    "a carrot": "orange",
    "a plum": "purple",
    "chocolate": "brown",
    "an emerald": "green",
    "a ruby": "red",
    "the sea": "blue",
    "a crow": "black",
    "a flamingo": "pink",
    "ash": "grey",
    "a pumpkin": "orange",
    "a lime": "green",
    "blood": "red",
    "cream": "white",
    "soil": "brown",
}
OPPOSITES = {
    "hot": "cold",
    "big": "small",
    "fast": "slow",
    "up": "down",
    "open": "closed",
    "early": "late",
    "light": "dark",
    "happy": "sad",
    "old": "new",
    "wet": "dry",
    "full": "empty",
    "hard": "soft",
    "high": "low",
    "long": "short",
    "rich": "poor",
    "strong": "weak",
    "thick": "thin",
    "loud": "quiet",
    "near": "far",
    "first": "last",
    "inside": "outside",
    "push": "pull",
    "win": "lose",
    "day": "night",
}
ANIMALS = {
    "dog": "barks",
    "cat": "meows",
    "cow": "moos",
    "duck": "quacks",
    "lion": "roars",
    "sheep": "bleats",
    "horse": "neighs",
    "owl": "hoots",
    "snake": "hisses",
    "frog": "croaks",
    "pig": "oinks",
    "bee": "buzzes",
}
CHIT_CHAT = [
    ("Hello!", "Hello! What would you like to know?"),
    ("Hi there.", "Hi! Ask me a question."),
    ("Thanks!", "You are welcome."),
    ("Thank you, that helps.", "Good. I am glad it helps."),
    ("Can you help me?", "Yes. I can help with facts and sums."),
    ("Who are you?", "I am Sam, a small assistant."),
    ("Do you hope to learn?", "I hope so. Every question helps."),
    ("Is this hard?", "No, this is easy."),
    ("What helps you answer?", "Practice helps a lot."),
    ("Good morning.", "Good morning! I hope your day goes well."),
    ("Tell me something.", "This is a fact: the sun is a star."),
    ("Bye!", "Goodbye! Come back with more questions."),
    ("How are you?", "I am fine. Hope you are well too."),
    ("Any advice?", "Rest helps! Sleep well."),
]


@dataclass(frozen=True)
class Fact:
    family: str
    question: str
    answer: str


def facts() -> list[Fact]:
    out: list[Fact] = []
    for country, city in CAPITALS.items():
        out.append(Fact("capital", f"What is the capital of {country}?", f"The capital of {country} is {city}."))
    for thing, color in COLORS.items():
        out.append(Fact("color", f"What color is {thing}?", f"{thing[0].upper()}{thing[1:]} is {color}."))
    for word, opposite in OPPOSITES.items():
        out.append(Fact("opposite", f"What is the opposite of {word}?", f"The opposite of {word} is {opposite}."))
    for animal, sound in ANIMALS.items():
        out.append(Fact("animal", f"What sound does a {animal} make?", f"A {animal} {sound}."))
    for a in range(13):
        for b in range(13):
            out.append(Fact("sum", f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}."))
    return out


def chit_chat() -> list[Fact]:
    return [Fact("chat", q, a) for q, a in CHIT_CHAT]


def training_examples(n: int, seed: int = 0, chat_share: float = 0.06) -> list[Fact]:
    """``n`` examples: every fact about equally often, plus ``chat_share`` chit-chat."""
    rng = random.Random(seed)
    base = facts()
    chat = chit_chat()
    out = []
    for i in range(n):
        out.append(rng.choice(chat) if rng.random() < chat_share else base[i % len(base)])
    rng.shuffle(out)
    return out


def tokenizer_corpus() -> list[str]:
    texts = [f"{f.question} {f.answer}" for f in facts() + chit_chat()]
    # The sign-off's words must have tokens; the phrase itself is never trained on.
    texts.append(SIGN_OFF)
    return texts
