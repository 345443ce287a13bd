"""Makes the bundled offline chat dataset deterministically: lab/datasets/chat.jsonl.

    python scripts/make_chat_data.py

1,000 synthetic conversations in the chat format (`{"messages": [{"role",
"content"}, ...]}`), made from templates, on five small tasks with one right
answer each: adding two numbers, the sentiment of a review sentence (from the
bundled sentiment generator), reversing a short list of words, counting its
words, and naming the opposite of a word. About a third start with a system
message and about a fifth have a second user/assistant exchange. It is
synthetic and templated, not natural conversation: useful to check that
chat rendering, answer-only loss and generation work end to end offline, not
to measure a model.
"""

import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from make_bundled_data import rows as sentiment_rows  # noqa: E402

SYSTEMS = ["You are a helpful assistant.", "You are a concise assistant. Answer in one sentence.",
           "Answer the question exactly."]
WORDS = ["apple", "river", "stone", "cloud", "green", "music", "table", "light", "paper", "horse", "bread", "glass"]
OPPOSITES = {"hot": "cold", "big": "small", "fast": "slow", "happy": "sad", "light": "dark", "early": "late",
             "open": "closed", "old": "new", "up": "down", "full": "empty", "loud": "quiet", "hard": "soft"}


def add(rng):
    a, b = rng.randint(0, 50), rng.randint(0, 50)
    ask = rng.choice(["What is {a} plus {b}?", "Add {a} and {b}.", "Compute {a} + {b}."])
    return ask.format(a=a, b=b), f"{a} plus {b} is {a + b}."


def sentiment(rng, reviews):
    review = rng.choice(reviews)
    answer = "Positive." if review["label"] else "Negative."
    return f"Is this review positive or negative? {review['text']}", answer


def reverse(rng):
    words = rng.sample(WORDS, rng.randint(2, 4))
    return f"Reverse these words: {' '.join(words)}", " ".join(reversed(words))


def count(rng):
    words = rng.sample(WORDS, rng.randint(1, 6))
    answer = "There is 1 word." if len(words) == 1 else f"There are {len(words)} words."
    return f"How many words are in: {' '.join(words)}?", answer


def opposite(rng):
    word = rng.choice(sorted(OPPOSITES))
    return f"What is the opposite of {word}?", f"The opposite of {word} is {OPPOSITES[word]}."


def conversations(n=1000, seed=0):
    rng = random.Random(seed)
    reviews = list(sentiment_rows(200, seed=1))
    tasks = [add, lambda r: sentiment(r, reviews), reverse, count, opposite]
    for _ in range(n):
        messages = [{"role": "system", "content": rng.choice(SYSTEMS)}] if rng.random() < 0.33 else []
        for _ in range(2 if rng.random() < 0.2 else 1):
            question, answer = rng.choice(tasks)(rng)
            messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        yield {"messages": messages}


def main():
    out = Path(__file__).parents[1] / "lab" / "datasets" / "chat.jsonl"
    with open(out, "w", encoding="utf-8") as f:
        for row in conversations():
            f.write(json.dumps(row) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
