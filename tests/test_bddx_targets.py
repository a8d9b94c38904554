"""BDD-X targets on realistic rows: joined targets read as sentences, justification-only targets keep their
connective, actions lose trailing " ,", and the split back into action and justification is exact for scoring."""

import pytest

from tests.test_annotation_files import write_bddx
from vidgpt2.data import load_bddx
from vidgpt2.training import score_split, split_action_justification

# (raw action, raw justification) as annotators wrote them, and the expected (action, justification, joined caption).
ROWS = [
    # leading connectives of every kind, kept and lower-cased
    (
        ("The car accelerates", "to merge into traffic"),
        ("The car accelerates", "to merge into traffic", "The car accelerates to merge into traffic"),
    ),
    (
        ("The car stops", "because the light is red."),
        ("The car stops", "because the light is red", "The car stops because the light is red"),
    ),
    (
        ("The car slows down.", "As the light ahead turns red"),
        ("The car slows down", "as the light ahead turns red", "The car slows down as the light ahead turns red"),
    ),
    (
        ("The car is stopped", "Since the light is red"),
        ("The car is stopped", "since the light is red", "The car is stopped since the light is red"),
    ),
    (
        ("The car drives slowly", "because of the traffic ahead"),
        ("The car drives slowly", "because of the traffic ahead", "The car drives slowly because of the traffic ahead"),
    ),
    (
        ("The car is stopped", "due to traffic ahead"),
        ("The car is stopped", "due to traffic ahead", "The car is stopped due to traffic ahead"),
    ),
    (
        ("The car moves forward", "so it can get through the intersection"),
        (
            "The car moves forward",
            "so it can get through the intersection",
            "The car moves forward so it can get through the intersection",
        ),
    ),
    (
        ("The car slows", "in order to turn right"),
        ("The car slows", "in order to turn right", "The car slows in order to turn right"),
    ),
    (
        ("The car waits", "because, a pedestrian is crossing"),
        ("The car waits", "because a pedestrian is crossing", "The car waits because a pedestrian is crossing"),
    ),
    # trailing " ," in the action
    (
        ("The car merges right ,", "because the lane ends"),
        ("The car merges right", "because the lane ends", "The car merges right because the lane ends"),
    ),
    # a full-sentence justification gets "because"
    (
        ("The car drives on", "traffic is moving and it has to keep up"),
        (
            "The car drives on",
            "because traffic is moving and it has to keep up",
            "The car drives on because traffic is moving and it has to keep up",
        ),
    ),
    (
        ("The car keeps its speed", "The road is clear"),
        ("The car keeps its speed", "because the road is clear", "The car keeps its speed because the road is clear"),
    ),
    # the connective written at the end of the action moves to the justification
    (
        ("The car slows down because", "the light is red"),
        ("The car slows down", "because the light is red", "The car slows down because the light is red"),
    ),
    # actions whose own words are connectives: split at the right place, with a comma where needed
    (
        ("The car slows to a stop", "because the light is red"),
        ("The car slows to a stop", "because the light is red", "The car slows to a stop because the light is red"),
    ),
    (
        ("The car veers to the left", "to avoid a parked car"),
        ("The car veers to the left", "to avoid a parked car", "The car veers to the left, to avoid a parked car"),
    ),
    (
        ("The car waits for the light", "as a pedestrian crosses"),
        (
            "The car waits for the light",
            "as a pedestrian crosses",
            "The car waits for the light, as a pedestrian crosses",
        ),
    ),
    # "to" only as a whole word: "towards" is not a connective
    (
        ("The car turns", "towards the exit to leave the highway"),
        (
            "The car turns",
            "because towards the exit to leave the highway",
            "The car turns because towards the exit to leave the highway",
        ),
    ),
    # justification with a later connective of its own
    (
        ("The car stops", "because the light is red, so it waits"),
        (
            "The car stops",
            "because the light is red, so it waits",
            "The car stops, because the light is red, so it waits",
        ),
    ),
]


@pytest.fixture(scope="module")
def bddx_folder(tmp_path_factory):
    segments = [(2 * i, 2 * i + 1, *raw) for i, (raw, _) in enumerate(ROWS)]
    rows = [("aaaa-0001", segments[:15]), ("aaaa-0002", segments[15:])]
    return write_bddx(tmp_path_factory.mktemp("bddx"), rows, {"train.txt": ["1_aaaa-0001", "2_aaaa-0002"]})


def test_joined_targets_read_as_sentences(bddx_folder):
    train = load_bddx(bddx_folder)["train"]
    assert len(train) == len(ROWS)
    for row, (raw, (action, justification, joined)) in zip(train, ROWS):
        assert (row["action"], row["justification"], row["caption"]) == (action, justification, joined), raw
        assert row["references"] == [joined]
        assert " ," not in row["caption"] and not row["action"].endswith(",")


def test_justification_and_action_targets(bddx_folder):
    justification = load_bddx(bddx_folder, target="justification")["train"]
    action = load_bddx(bddx_folder, target="action")["train"]
    assert justification["caption"] == [expected[1] for _, expected in ROWS]
    assert action["caption"] == [expected[0] for _, expected in ROWS]
    # a justification-only target is a clause that starts with its connective, never a fragment like "of the traffic"
    assert "because of the traffic ahead" in justification["caption"]
    assert "to merge into traffic" in justification["caption"]


def test_split_back_is_exact_for_every_joined_target(bddx_folder):
    train = load_bddx(bddx_folder)["train"]
    for row in train:
        assert split_action_justification(row["caption"]) == (row["action"], row["justification"])


@pytest.mark.parametrize(
    "prediction, expected",
    [
        ("the car accelerates to merge into traffic", ("the car accelerates", "to merge into traffic")),
        ("the car stops because the light is red", ("the car stops", "because the light is red")),
        ("the car slows to a stop because the light is red", ("the car slows to a stop", "because the light is red")),
        ("the car veers to the left, to avoid a car", ("the car veers to the left", "to avoid a car")),
        ("the car is stopped", ("the car is stopped", "")),
        ("because the light is red", ("because the light is red", "")),  # no action before the connective
    ],
)
def test_split_of_generated_captions(prediction, expected):
    assert split_action_justification(prediction) == expected


def test_score_split_scores_action_and_justification_exactly(bddx_folder):
    test = load_bddx(bddx_folder)["train"]
    metrics = score_split(list(test["caption"]), test, use_java=False)
    # perfect predictions: the parts match their references word for word
    assert metrics["action_rouge_l"] == pytest.approx(1.0)
    assert metrics["justification_rouge_l"] == pytest.approx(1.0)
    assert metrics["justification_bleu_4"] == pytest.approx(1.0)
    # the action-only target is not split
    action = load_bddx(bddx_folder, target="action")["train"]
    assert not any(name.startswith("action_") for name in score_split(list(action["caption"]), action, use_java=False))
