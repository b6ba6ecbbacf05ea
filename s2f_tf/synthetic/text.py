"""The sentence grammar: varied English sentences from built-in templates and word lists.

sentence(rng) -> str     about 6-16 words; every word choice is one draw from `rng`
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_SUBJECTS = (
    "the old farmer",
    "my neighbour",
    "a young teacher",
    "the doctor",
    "our captain",
    "the tall stranger",
    "my little brother",
    "her grandmother",
    "the baker",
    "a quiet student",
    "the mayor",
    "his best friend",
    "the gardener",
    "a tired driver",
    "the new manager",
    "my aunt",
    "the fisherman",
    "a clever girl",
    "the postman",
    "our guide",
    "the painter",
    "a busy nurse",
    "the young pilot",
    "my cousin",
    "the shopkeeper",
    "the scientist",
    "a friendly dog",
    "the musician",
    "the chef",
    "our landlord",
    "Anna",
    "Peter",
    "Maria",
    "Thomas",
    "Sarah",
    "David",
    "Emily",
    "James",
    "Laura",
    "Daniel",
)
_VERBS_PAST = (
    "found",
    "painted",
    "carried",
    "cleaned",
    "bought",
    "forgot",
    "opened",
    "fixed",
    "sold",
    "borrowed",
    "watched",
    "repaired",
    "moved",
    "lost",
    "ordered",
    "wrapped",
    "checked",
    "delivered",
    "measured",
    "described",
    "noticed",
    "collected",
    "hid",
    "returned",
    "brought",
    "picked up",
    "packed",
    "counted",
)
_VERBS_BASE = (
    "find",
    "paint",
    "carry",
    "clean",
    "buy",
    "open",
    "fix",
    "sell",
    "borrow",
    "watch",
    "repair",
    "move",
    "order",
    "wrap",
    "check",
    "deliver",
    "measure",
    "describe",
    "collect",
    "return",
    "bring",
    "pack",
)
_OBJECTS = (
    "the red bicycle",
    "a wooden chair",
    "the heavy box",
    "some fresh bread",
    "the broken window",
    "an old map",
    "the blue kettle",
    "a small boat",
    "the garden gate",
    "a basket of apples",
    "the silver key",
    "a warm blanket",
    "the kitchen table",
    "a pair of boots",
    "the yellow kite",
    "a stack of letters",
    "the green umbrella",
    "a bottle of milk",
    "the piano",
    "a long ladder",
    "the picture frame",
    "a bag of rice",
    "the winter coat",
    "a bunch of flowers",
    "the radio",
    "a jar of honey",
    "the camera",
    "a cup of tea",
    "the travel guide",
    "a set of tools",
)
_PLACES = (
    "in the garden",
    "near the river",
    "at the station",
    "behind the church",
    "on the bridge",
    "in the kitchen",
    "at the market",
    "by the lake",
    "in the old barn",
    "outside the library",
    "on the top shelf",
    "under the stairs",
    "at the harbour",
    "in the village square",
    "near the school",
    "on the hill",
    "at the corner shop",
    "in the back room",
    "by the fence",
    "across the street",
)
_TIMES = (
    "this morning",
    "last night",
    "on Sunday",
    "before dinner",
    "after lunch",
    "yesterday",
    "early today",
    "last winter",
    "in the evening",
    "at noon",
    "two days ago",
    "on Friday",
    "every week",
    "last summer",
    "just now",
    "at sunrise",
)
_REASONS = (
    "it was raining",
    "the shop was closed",
    "nobody else could",
    "it was getting late",
    "the road was blocked",
    "we needed it",
    "the weather was fine",
    "the bus was late",
    "it looked useful",
    "everyone was busy",
)
_TEMPLATES = (
    "{S} {V} {O} {P} {T}.",
    "{S} {V} {O} {T}.",
    "{Tc}, {s} {V} {O} {P}.",
    "Did you know that {s} {V} {O} {P}?",
    "I think {s} {V} {O} because {R}.",
    "We should {B} {O} {P} {T}.",
    "Please {B} {O} before {t}.",
    "{S} wanted to {B} {O}, but {R}.",
    "Why did {s} {B} {O} {P}?",
    "When {R}, {s} {V} {O}.",
    "{S} will {B} {O} {P}.",
    "After {t}, {s} {V} {O} and {V} {O}.",
)


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def sentence(rng: np.random.Generator) -> str:
    """One varied English sentence (about 6-16 words) from built-in templates and word lists."""
    template = _TEMPLATES[int(rng.integers(len(_TEMPLATES)))]

    def pick(words: Sequence[str]) -> str:
        return words[int(rng.integers(len(words)))]

    out = []
    i = 0
    while i < len(template):  # left-to-right so each {X} gets a fresh draw
        if template[i] == "{":
            j = template.index("}", i)
            key = template[i + 1 : j]
            word = {
                "S": lambda: _cap(pick(_SUBJECTS)),
                "s": lambda: pick(_SUBJECTS),
                "V": lambda: pick(_VERBS_PAST),
                "B": lambda: pick(_VERBS_BASE),
                "O": lambda: pick(_OBJECTS),
                "P": lambda: pick(_PLACES),
                "T": lambda: pick(_TIMES),
                "t": lambda: pick(_TIMES),
                "Tc": lambda: _cap(pick(_TIMES)),
                "R": lambda: pick(_REASONS),
            }[key]()
            out.append(word)
            i = j + 1
        else:
            out.append(template[i])
            i += 1
    return _cap("".join(out))
