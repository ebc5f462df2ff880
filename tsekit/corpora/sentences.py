"""Seeded English sentence generator for the synthetic mini corpus.

The TTS voices read these sentences; the same words, upper-cased and without
punctuation, are the LibriSpeech-style transcripts. Templates x word lists give
many millions of distinct sentences, so two utterances rarely share one. Words
are plain, common English that every voice pronounces reasonably.
"""

from __future__ import annotations

import numpy as np

NAMES = """
ALICE ARTHUR BENJAMIN CLARA DANIEL EDITH EMMA FRANK GEORGE GRACE HARRY HELEN HENRY ISAAC JAMES
JANE JOHN JULIA LUCY MARGARET MARTHA MARY NORA OLIVER PETER RACHEL ROBERT RUTH SAMUEL SARAH
THOMAS WALTER WILLIAM AGNES CHARLES DOROTHY EDWARD FLORENCE HUGH LOUISA
""".split()

NOUNS = """
ANSWER APPLE BASKET BELL BIRD BLANKET BOAT BOOK BOTTLE BOX BRIDGE BROTHER CANDLE CAPTAIN CART
CASTLE CHAIR CHILD CLOCK CLOUD COAT COTTAGE DOCTOR DOOR DRAWER DREAM FARMER FENCE FIELD FIRE
FLOWER GARDEN GATE GIFT HAMMER HAT HILL HORSE HOUSE ISLAND JOURNEY KETTLE KEY KING LADDER
LAMP LETTER LION MAP MARKET MESSAGE MILL MIRROR MORNING MOUNTAIN NEIGHBOUR NEWSPAPER OCEAN
ORCHARD PAINTER PARCEL PENCIL PICTURE PILLOW PLATE POCKET QUEEN RIBBON RIVER ROAD ROOF SAILOR
SHADOW SHIP SHOP SISTER SOLDIER SONG STAIRCASE STONE STORY STRANGER SUPPER TABLE TEACHER
TOWER TRAIN TREE VILLAGE WAGON WALL WINDOW WINTER WOLF
""".split()

ADJECTIVES = """
ANCIENT BEAUTIFUL BITTER BRAVE BRIGHT BROKEN CAREFUL CHEERFUL CLEVER COLD CROOKED CURIOUS
DARK DISTANT DUSTY EAGER EMPTY FAITHFUL FAMOUS FOOLISH FRIENDLY GENTLE GOLDEN GREEN HEAVY
HIDDEN HONEST HUMBLE LITTLE LONELY MERRY NARROW NOBLE OLD PATIENT POOR PROUD QUIET RED
RESTLESS ROUND SILVER SIMPLE SLENDER SMALL STRANGE STRONG SUDDEN TALL TIRED WARM WEARY WHITE
WICKED WIDE WOODEN YELLOW YOUNG
""".split()

VERBS_PAST = """
ADMIRED BORROWED BROUGHT BUILT BURIED CALLED CARRIED CAUGHT CLEANED CLOSED COUNTED COVERED
DISCOVERED DREW FETCHED FOLLOWED FORGOT FOUND GATHERED HELD HID KEPT LIFTED LOST MENDED
NOTICED OPENED PAINTED PASSED PULLED PUSHED REMEMBERED REPAIRED SAW SEARCHED SENT SHOWED
SOLD STOLE TOOK TOUCHED TURNED VISITED WATCHED WRAPPED WROTE
""".split()

VERBS_INTRANSITIVE = """
ARRIVED LAUGHED LISTENED PAUSED RESTED RETURNED SANG SHOUTED SLEPT SMILED STAYED STOPPED
TRAVELLED TREMBLED WAITED WANDERED WHISPERED WORKED
""".split()

PLACES = """
ACROSS_THE_VALLEY AT_THE_STATION BEHIND_THE_BARN BESIDE_THE_LAKE BY_THE_FIRE DOWN_THE_LANE
IN_THE_KITCHEN IN_THE_LIBRARY IN_THE_MEADOW INSIDE_THE_CHURCH NEAR_THE_HARBOUR ON_THE_BALCONY
ON_THE_HILLSIDE OUTSIDE_THE_INN UNDER_THE_BRIDGE UP_THE_STAIRS AT_THE_MARKET ALONG_THE_SHORE
""".split()

TIMES = """
AT_DAWN AT_NOON BEFORE_SUPPER AFTER_DINNER LAST_NIGHT THAT_EVENING ON_SUNDAY IN_THE_SPRING
EARLY_NEXT_MORNING THE_NEXT_DAY BY_MIDNIGHT IN_SEPTEMBER ONCE_AGAIN AT_LAST
""".split()

ADVERBS = """
SLOWLY QUICKLY GENTLY SUDDENLY QUIETLY CAREFULLY PROUDLY HAPPILY SADLY BRAVELY CALMLY
SOFTLY EAGERLY SILENTLY WILLINGLY
""".split()

NUMBERS = "TWO THREE FOUR FIVE SIX SEVEN EIGHT NINE TEN TWELVE TWENTY".split()

# {slot} names one of the word lists above ({nouns}: a plural noun); everything else is literal.
TEMPLATES = (
    "THE {adj} {noun} {past} THE {noun} {place}",
    "{name} {past} A {adj} {noun} {time}",
    "{name} {adverb} {past} THE {noun} AND {intrans}",
    "WE {intrans} {place} UNTIL THE {noun} {intrans}",
    "THE {noun} WAS {adj} AND THE {noun} WAS {adj}",
    "{time} {name} {intrans} {place}",
    "{name} AND {name} {past} {number} {adj} {nouns}",
    "NOBODY KNEW WHY THE {adj} {noun} HAD {intrans} {time}",
    "HE {past} HER {noun} AND SHE {past} HIS {noun}",
    "THERE WERE {number} {nouns} {place}",
    "THE {noun} {adverb} {intrans} {place} {time}",
    "{name} SAID THAT THE {noun} WAS TOO {adj}",
    "A {adj} {noun} {intrans} BESIDE THE {adj} {noun}",
    "THEY {past} THE {noun} {place} {time}",
    "IT WAS A {adj} {noun} WITH A {adj} {noun}",
    "{name} ASKED THE {noun} ABOUT THE {adj} {noun}",
    "SHE {adverb} {past} THE {adj} {noun}",
    "THE {noun} OF THE {noun} {past} A {noun} {place}",
    "{name} HAD NEVER SEEN SUCH A {adj} {noun}",
    "EVERY {noun} IN THE {noun} {intrans} {time}",
    "THE {adj} {noun} {intrans} {adverb}",
    "{name} {intrans} {place}",
    "{name} {past} THE {adj} {noun}",
)

SLOTS = {
    "name": NAMES,
    "noun": NOUNS,
    "adj": ADJECTIVES,
    "past": VERBS_PAST,
    "intrans": VERBS_INTRANSITIVE,
    "place": PLACES,
    "time": TIMES,
    "adverb": ADVERBS,
    "number": NUMBERS,
}


def make_sentence(rng: np.random.Generator, max_words: int | None = None) -> str:
    """One upper-case sentence without punctuation, e.g. 'THE OLD CART STOPPED AT LAST'.

    ``max_words`` (when given) makes the generator retry templates until the
    sentence is at most that long, so that a slow voice can get a short one.
    """
    for _ in range(100):
        template = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
        words = []
        for token in template.split():
            slot = _slot(token)
            if slot is None:
                words.append(token)
                continue
            if slot == "nouns":
                words.append(plural(NOUNS[int(rng.integers(len(NOUNS)))]))
                continue
            choices = SLOTS[slot]
            words.append(choices[int(rng.integers(len(choices)))].replace("_", " "))
        sentence = " ".join(_fix_articles(" ".join(words).split()))
        if max_words is None or len(sentence.split()) <= max_words:
            return sentence
    return sentence


IRREGULAR_PLURALS = {"CHILD": "CHILDREN", "WOLF": "WOLVES"}


def plural(noun: str) -> str:
    """English plural of the nouns above (enough rules for this word list)."""
    if noun in IRREGULAR_PLURALS:
        return IRREGULAR_PLURALS[noun]
    if noun.endswith(("S", "X", "CH", "SH")):
        return noun + "ES"
    if noun.endswith("Y") and noun[-2] not in "AEIOU":
        return noun[:-1] + "IES"
    return noun + "S"


def _fix_articles(words: list[str]) -> list[str]:
    """'A' becomes 'AN' before a vowel ('AN EMPTY CART')."""
    return [
        "AN" if word == "A" and k + 1 < len(words) and words[k + 1][0] in "AEIOU" else word
        for k, word in enumerate(words)
    ]


def _slot(token: str) -> str | None:
    """'{noun}' -> 'noun'; a literal word -> None."""
    return token[1:-1] if token.startswith("{") else None
