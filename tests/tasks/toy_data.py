"""Small learnable datasets for training tests on the random-weight tiny presets."""

import random

POSITIVE = "great excellent wonderful lovely brilliant superb amazing delightful".split()
NEGATIVE = "awful terrible horrible boring bad poor dull disappointing".split()
FILLER = """the a this that movie film story plot actor acting scene music ending book food
service place staff room was is felt looked seemed really very quite and but with for of
in on at to by about we you they it my our time day night people friends family""".split()


def sentiment(n, seed=0):
    """`n` sentences and labels: 0 negative word, 1 positive word, 2 neither
    (chance accuracy 1/3). The sentiment word sits at a random position."""
    rng = random.Random(seed)
    texts, labels = [], []
    for _ in range(n):
        label = rng.randrange(3)
        words = [rng.choice(FILLER) for _ in range(rng.randint(3, 7))]
        if label < 2:
            words.insert(rng.randrange(len(words) + 1), rng.choice((NEGATIVE, POSITIVE)[label]))
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels


def corpus(n, seed=0):
    """A small, repetitive corpus that a language model can fit quickly."""
    rng = random.Random(seed)
    subjects = ["the movie", "the film", "the food", "the staff", "the music"]
    verbs = ["was", "is", "seemed", "felt"]
    return [f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(POSITIVE + NEGATIVE)}." for _ in range(n)]
