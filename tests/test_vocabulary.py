"""The pretrained label vocabulary: every label mapped exactly once, into a known category."""

from __future__ import annotations

import math

import pytest

from soundalike.models import vocabulary as V
from soundalike.models.pretrained import MSD_LABELS, MTT_LABELS, SPECS


@pytest.mark.parametrize("dataset,labels", [("MTT", MTT_LABELS), ("MSD", MSD_LABELS)])
def test_every_label_mapped_once(dataset, labels):
    table = V.VOCABULARIES[dataset]
    assert len(labels) == len(set(labels))          # the models emit each label once
    assert set(table) == set(labels)                # no label missing, none extra
    assert all(V.category_of(lab, dataset=dataset) in V.CATEGORIES for lab in labels)


def test_every_pretrained_model_has_a_vocabulary():
    for spec in SPECS.values():
        assert set(V.VOCABULARIES[spec.dataset]) == set(spec.labels)


def test_categories_and_roles_agree():
    for table in V.VOCABULARIES.values():
        for label, term in table.items():
            assert term.category in V.CATEGORIES
            assert term.vocals in (-1, 0, 1) and term.energy in (-1, 0, 1)
            if term.category == "vocals":
                assert term.vocals != 0, label      # a vocals tag must say yes or no
    assert V.role_labels("vocals", +1) & V.role_labels("vocals", -1) == frozenset()
    assert V.role_labels("energy", +1) & V.role_labels("energy", -1) == frozenset()
    assert {"no vocals", "instrumental"} <= V.role_labels("vocals", -1)


@pytest.mark.parametrize("label,dataset,category", [
    ("piano", "MTT", "instrument"), ("rock", "MSD", "genre"), ("quiet", "MTT", "mood"),
    ("female vocalists", "MSD", "vocals"), ("fast", "MTT", "tempo-feel"), ("80s", "MSD", "era"),
    ("something else", None, "tag"),
])
def test_category_of(label, dataset, category):
    assert V.category_of(label, dataset=dataset) == category


def test_fusion_analyzer_files_its_labels_in_their_categories():
    # the default analyzer (MTT labels, then MSD's that MTT lacks) tags into the same
    # categories as the single models, so `--where genre:rock` works on a fresh catalog
    from soundalike.models.fusion import FusionAnalyzer

    a = FusionAnalyzer()
    assert set(a.label_categories) == set(a.labels)
    assert a.label_categories["piano"] == "instrument" and a.label_categories["rock"] == "genre"
    assert a.label_categories["80s"] == "era" and a.label_categories["quiet"] == "mood"
    assert all(c in V.CATEGORIES for c in a.label_categories.values())


@pytest.mark.parametrize("preds,evidence", [
    ({"vocal": 0.5, "no vocals": 0.5}, 0.0),
    ({"vocal": 0.9, "female": 0.1, "no vocals": 0.1}, math.log(9.0)),    # mean of each side
    ({"male vocalists": 0.5, "instrumental": 0.8}, -math.log(4.0)),
    ({"female vocalists": 0.5}, math.log(19.0)),                            # no "no voice" label: 5 %
    ({"piano": 0.9, "rock": 0.3}, None),                                    # nothing about voice
])
def test_vocals_evidence_is_the_mean_logit_difference(preds, evidence):
    got = V.vocals_evidence(preds)
    assert got == pytest.approx(evidence) if evidence is not None else got is None


def test_a_female_and_a_male_voice_weigh_the_same():
    base = {lab: 0.05 for lab in V.role_labels("vocals", +1) & set(V.MTT_VOCABULARY)}
    base |= {"no vocals": 0.2, "no vocal": 0.2, "no voice": 0.2}
    her = base | {"female": 0.6, "woman": 0.5, "female vocal": 0.4}
    him = base | {"male": 0.6, "man": 0.5, "male vocal": 0.4}
    assert V.vocals_evidence(her) == pytest.approx(V.vocals_evidence(him))
    assert V.vocals_evidence(her) > V.vocals_evidence(base)


@pytest.mark.parametrize("preds,vocab", [
    ({"vocal": 0.3, "no vocals": 0.1, "piano": 0.5}, "MTT"),
    ({"female vocalists": 0.3, "instrumental": 0.1}, "MSD"),
    ({"vocal": 0.3, "female vocalists": 0.3, "instrumental": 0.1}, "MTT+MSD"),
    ({"piano": 0.5, "rock": 0.2}, None),
])
def test_vocals_vocabulary_picks_the_calibration(preds, vocab):
    assert V.vocals_vocabulary(preds) == vocab
    if vocab:
        slope, offset = V.VOCALS_CALIBRATION[vocab]
        d = V.vocals_evidence(preds)
        assert V.vocals_probability(preds) == pytest.approx(1 / (1 + math.exp(-(slope * d + offset))), abs=1e-3)


def test_vocals_probability_applies_the_calibration():
    preds = {"vocal": 0.7, "no vocals": 0.4}
    d = V.vocals_evidence(preds)
    assert V.vocals_probability(preds, calibration=(1.0, 0.0)) == pytest.approx(1 / (1 + math.exp(-d)), abs=1e-3)
    assert V.vocals_probability(preds, calibration=(2.0, -1.0)) == pytest.approx(
        1 / (1 + math.exp(-(2 * d - 1))), abs=1e-3)
    # a negative offset moves the same evidence towards "no vocals"
    assert V.vocals_probability(preds, calibration=(1.0, -3.0)) < 0.5 < V.vocals_probability(preds, calibration=(1.0, 0.0))
    assert V.vocals_probability({"piano": 0.9}) is None
