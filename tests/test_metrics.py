import pytest

from manyicl.metrics import (
    exact_match,
    final_number,
    math_accuracy,
    multilabel_scores,
    normalize_answer,
    parse_labels,
    rouge_l,
    score_generation,
)


def test_exact_match_normalises_case_punctuation_and_articles():
    assert normalize_answer("  The Eiffel-Tower! ") == "eiffeltower"
    assert exact_match("the Rome.", "rome") == 1.0
    assert exact_match("Paris", "Rome") == 0.0


def test_rouge_l_by_hand():
    # LCS("the cat sat on the mat", "the cat on a mat") = the cat on mat -> 4
    pred, gold = "the cat sat on the mat", "the cat on a mat"
    p, r = 4 / 6, 4 / 5
    assert rouge_l(pred, gold) == pytest.approx(2 * p * r / (p + r))
    assert rouge_l("über straße", "über straße") == 1.0  # non-ASCII words survive tokenisation
    assert rouge_l("", "something") == 0.0


def test_final_number_gsm8k_style():
    assert final_number("He has 3 + 4 = 7 apples.\n#### 7") == 7
    assert final_number("so the answer is 1,250.") == 1250
    assert final_number("-3.5 degrees") == -3.5
    assert final_number("no digits") is None
    assert math_accuracy("The total is 12", "Natalia sold 48/2 = 24 ... #### 12") == 1.0
    assert math_accuracy("13", "#### 12") == 0.0


def test_multilabel_f1_and_exact_match_by_hand():
    labels = ("joy", "anger", "fear", "love")
    assert parse_labels("Joy, love, banana", labels) == {"joy", "love"}
    f1, em = multilabel_scores({"joy", "love"}, {"joy", "fear"})
    assert f1 == pytest.approx(2 * 1 / (2 + 2)) and em == 0.0
    assert multilabel_scores({"joy"}, {"joy"}) == (1.0, 1.0)
    assert multilabel_scores(set(), {"joy"}) == (0.0, 0.0)
    s = score_generation("multilabel_f1", "joy, anger", "anger, joy", labels)
    assert s == {"score": 1.0, "exact_match": 1.0}


def test_unknown_metric():
    with pytest.raises(ValueError):
        score_generation("bleu", "a", "b")
