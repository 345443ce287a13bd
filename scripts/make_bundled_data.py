"""Makes the bundled offline dataset deterministically: lab/datasets/sentiment.jsonl.

    python scripts/make_bundled_data.py

2,000 synthetic English review sentences, label 1 (positive) or 0 (negative),
balanced. The label follows the sentiment adjective, flipped by a negation
("was not great" is negative) in about a fifth of the rows, so a model must
read more than one word. It is synthetic: useful to check that a pipeline
learns, not to measure a model.
"""

import json
import random
from pathlib import Path

SUBJECTS = ["the movie", "this film", "the story", "the acting", "the music", "the ending", "the food",
            "the service", "this book", "the plot", "our room", "the staff", "the show", "the game"]
VERBS = ["was", "is", "felt", "seemed", "looked", "turned out"]
INTENSIFIERS = ["", "really", "very", "quite", "truly", "so", "rather"]
POSITIVE = ["great", "good", "excellent", "wonderful", "lovely", "brilliant", "superb", "amazing",
            "delightful", "fine", "enjoyable", "charming"]
NEGATIVE = ["bad", "poor", "awful", "terrible", "boring", "dull", "weak", "bland", "horrible",
            "disappointing", "tedious", "clumsy"]
TAILS = ["", "and i would go again", "overall", "to be honest", "for the price", "all night",
         "from start to finish", "if you ask me", "this time", "and everyone agreed"]


def rows(n=2000, seed=0):
    rng = random.Random(seed)
    for i in range(n):
        label = i % 2
        negated = rng.random() < 0.2
        adjective = rng.choice(POSITIVE if label != negated else NEGATIVE)
        words = [rng.choice(SUBJECTS), rng.choice(VERBS), "not" if negated else rng.choice(INTENSIFIERS),
                 adjective, rng.choice(TAILS)]
        text = " ".join(w for w in words if w).capitalize() + "."
        yield {"text": text, "label": label}


def main():
    out = Path(__file__).resolve().parent.parent / "lab" / "datasets" / "sentiment.jsonl"
    out.write_text("".join(json.dumps(row) + "\n" for row in rows()))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
