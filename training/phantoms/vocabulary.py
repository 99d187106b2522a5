"""The words PhantomCXR's reports are written with: synonyms and places per finding (train and test-only), modifiers,
hedges, sentence templates, negations and the sentences of normal films (used by :mod:`training.phantoms.reports`).

Held-out phrasing: :data:`TEST_ONLY_SYNONYMS` and :data:`TEST_ONLY_PLACES` hold words that never occur in a train
or val report.
"""

from __future__ import annotations

from typing import NamedTuple


class Place(NamedTuple):
    """Location words for a finding.

    Attributes:
        core: the location, ``{side}`` standing for the patient side ("{side} lower lobe").
        preposition: words that put the core after the noun ("in the" -> "nodule in the right lower lobe");
            ``None`` when the core only goes before the noun.
        prenominal: whether the core may go before the noun ("right lower lobe consolidation").
        sides: the sides this core can describe.
    """

    core: str
    preposition: str | None = "in the"
    prenominal: bool = True
    sides: tuple[str, ...] = ("right", "left")


BILATERAL = ("bilateral",)

# Finding nouns. Train and val reports use TRAIN_SYNONYMS only; test phrases draw on TEST_ONLY_SYNONYMS.
TRAIN_SYNONYMS: dict[str, tuple[str, ...]] = {
    "consolidation": ("consolidation", "airspace opacity", "airspace disease"),
    "atelectasis": (
        "atelectasis",
        "plate-like atelectasis",
        "discoid atelectasis",
        "linear atelectasis",
        "subsegmental atelectasis",
        "volume loss",
    ),
    "pleural_effusion": ("pleural effusion", "effusion", "pleural fluid"),
    "pneumothorax": ("pneumothorax",),
    "nodule": ("nodule", "pulmonary nodule", "nodular opacity"),
    "mass": ("mass", "pulmonary mass", "mass-like opacity"),
    "cardiomegaly": ("cardiomegaly", "enlarged cardiac silhouette", "enlargement of the cardiac silhouette"),
    "edema": ("pulmonary edema", "interstitial edema", "edema", "vascular congestion with edema"),
}

TEST_ONLY_SYNONYMS: dict[str, tuple[str, ...]] = {
    "consolidation": ("alveolar opacity", "alveolar consolidation", "infiltrate"),
    "atelectasis": ("collapse", "partial collapse", "atelectatic change", "band-like atelectatic change"),
    "pleural_effusion": ("pleural fluid collection", "hydrothorax"),
    "pneumothorax": ("pleural air collection",),
    "nodule": ("lung nodule", "nodular density", "coin lesion"),
    "mass": ("lung mass", "mass lesion"),
    "cardiomegaly": ("enlarged heart", "cardiac enlargement"),
    "edema": ("pulmonary oedema", "alveolar edema", "alveolar oedema"),
}

# Locations per Finding.zone. "{side} upper lung" is never prenominal in train: "right upper lung mass" would
# contain the held-out "lung mass".
TRAIN_PLACES: dict[str, tuple[Place, ...]] = {
    "upper": (
        Place("{side} upper lobe"),
        Place("{side} upper lung", prenominal=False),
        Place("{side} apex", "at the", prenominal=False),
        Place("{side} apical", None),
    ),
    "middle": (
        Place("right middle lobe", sides=("right",)),
        Place("{side} mid lung", prenominal=False),
        Place("lingula", prenominal=False, sides=("left",)),
        Place("lingular", None, sides=("left",)),
    ),
    "lower": (
        Place("{side} lower lobe"),
        Place("{side} base", "at the", prenominal=False),
        Place("{side} basilar", None),
        Place("{side} lower lung", prenominal=False),
    ),
    "apical": (Place("{side} apical", None), Place("{side} apex", "at the", prenominal=False)),
    "lateral": (Place("{side} lateral", None), Place("{side} lateral pleural surface", "along the", prenominal=False)),
    "basal": (Place("{side}", "on the"), Place("bilateral", None, sides=BILATERAL)),
    "perihilar": (Place("bilateral perihilar", None, sides=BILATERAL), Place("bilateral", None, sides=BILATERAL)),
}

TEST_ONLY_PLACES: dict[str, tuple[Place, ...]] = {
    "upper": (Place("{side} upper zone"), Place("{side} lung apex", "at the", prenominal=False)),
    "middle": (Place("{side} mid zone"), Place("{side} middle zone")),
    "lower": (Place("{side} lower zone"), Place("{side} lung base", "at the", prenominal=False)),
    "apical": (Place("{side} lung apex", "at the", prenominal=False),),
    "lateral": (Place("{side} lateral chest wall", "along the", prenominal=False),),
    "basal": (
        Place("{side}-sided", None),
        Place("{side} basal", None),
        Place("bilateral basal", None, sides=BILATERAL),
    ),
    "perihilar": (Place("bilateral parahilar", None, sides=BILATERAL),),
}

# Nouns that take "a"/"an" in "There is ..."; the rest are mass nouns ("There is right lower lobe consolidation").
COUNTABLE = frozenset(
    "airspace opacity|alveolar opacity|infiltrate|pleural effusion|effusion|pleural fluid collection|hydrothorax|"
    "pneumothorax|pleural air collection|nodule|pulmonary nodule|nodular opacity|lung nodule|nodular density|"
    "coin lesion|mass|pulmonary mass|mass-like opacity|lung mass|mass lesion|enlarged cardiac silhouette|"
    "enlarged heart".split("|")
)

AMOUNT_NOUNS = frozenset({"pleural fluid"})  # "small amount of right pleural fluid"

PATTERN_WORDS = {"plate": ("plate-like", "discoid", "band-like"), "linear": ("linear", "subsegmental")}

ADJECTIVES = {
    "small": ("small",),
    "moderate": ("moderate",),
    "large": ("large",),
    "mild": ("mild",),
    "severe": ("severe", "marked"),
}

ADVERBS = {"mild": ("mildly",), "moderate": ("moderately",), "severe": ("severely", "markedly")}

SEVERITY_PROBABILITY = {
    "consolidation": 0.4,
    "atelectasis": 0.4,
    "pleural_effusion": 0.9,
    "pneumothorax": 0.85,
    "cardiomegaly": 1.0,
    "edema": 0.85,
}

HEDGES = {
    "consolidation": ("concerning for pneumonia", "which may represent pneumonia", "likely infectious"),
    "atelectasis": ("cannot exclude superimposed infection", "although superimposed infection is not excluded"),
    "pleural_effusion": (),
    "pneumothorax": ("without mediastinal shift", "without evidence of tension"),
    "nodule": ("for which chest CT is recommended", "which may represent a granuloma"),
    "mass": ("concerning for malignancy", "suspicious for neoplasm", "for which CT is recommended"),
    "cardiomegaly": ("which may be accentuated by AP technique",),  # AP films only, see _hedges
    "edema": ("consistent with fluid overload", "likely cardiogenic"),
}

STATUSES = ("new", "unchanged", "increased", "decreased", "improved")

PRESENT = ("{P}.", "There {is} {a}{p}.", "{P} {is} present.", "{P} {is} noted.", "{P} {is} seen.")

COMPARED = (
    "Compared to the prior study, the {p} {is} {status}.",
    "{P} {is} {status} compared to the prior radiograph.",
    "{P}, {status} since the prior exam.",
)

NEGATIONS = {
    "consolidation": ("No focal consolidation.", "There is no focal consolidation.", "No airspace disease."),
    "atelectasis": ("No significant atelectasis.",),
    "pleural_effusion": (
        "No pleural effusion.",
        "There is no pleural effusion.",
        "No evidence of pleural effusion.",
        "The costophrenic angles are sharp.",
    ),
    "pneumothorax": ("No pneumothorax.", "There is no pneumothorax.", "No evidence of pneumothorax."),
    "nodule": ("No suspicious pulmonary nodule.",),
    "mass": ("No pulmonary mass.",),
    "cardiomegaly": (
        "Heart size is normal.",
        "The cardiac silhouette is normal in size.",
        "Normal heart size.",
        "The cardiomediastinal silhouette is within normal limits.",
        "No cardiomegaly.",
    ),
    "edema": ("No pulmonary edema.", "No evidence of pulmonary edema.", "There is no vascular congestion or edema."),
}

NEGATION_PROBABILITY = {
    "consolidation": 0.7,
    "atelectasis": 0.05,
    "pleural_effusion": 0.75,
    "pneumothorax": 0.75,
    "nodule": 0.1,
    "mass": 0.1,
    "cardiomegaly": 0.7,
    "edema": 0.4,
}

COMBINED_NEGATIONS = (
    (
        ("consolidation", "pleural_effusion", "pneumothorax"),
        (
            "No focal consolidation, pleural effusion, or pneumothorax.",
            "There is no consolidation, effusion or pneumothorax.",
        ),
    ),
    (("pleural_effusion", "pneumothorax"), ("No pleural effusion or pneumothorax.", "No effusion or pneumothorax.")),
    (("nodule", "mass"), ("No suspicious pulmonary nodules or masses.",)),
    (("consolidation", "edema"), ("No focal consolidation or pulmonary edema.",)),
)

PARENCHYMAL = ("consolidation", "atelectasis", "nodule", "mass", "edema")

LUNGS_CLEAR = ("The lungs are clear.", "Lungs are clear.", "The lungs are well expanded and clear.")

NORMAL_IMPRESSIONS = ("No acute cardiopulmonary process.", "No acute cardiopulmonary abnormality.")

BACKGROUND = ("No acute osseous abnormality.", "The visualized osseous structures are unremarkable.")

INDICATIONS = ("Cough.", "Cough and fever.", "Shortness of breath.", "Chest pain.", "Hypoxia.", "Follow-up.")
