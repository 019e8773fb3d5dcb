"""The synthetic agreement language: determinism, agreement, tokenizer, minimal-pair files."""

import json
import random

import numpy as np

from crosscoder_jax.synthetic import annotate, grammar as g, pairs as gp, vocab


def _verb_pair(word):
    return next(p for p in vocab.ALL_VERBS if word in p)


def test_batches_are_deterministic_and_step_dependent():
    a = g.batch(seed=3, step=7, batch_size=4, seq_len=24)
    b = g.batch(seed=3, step=7, batch_size=4, seq_len=24)
    c = g.batch(seed=3, step=8, batch_size=4, seq_len=24)
    d = g.batch(seed=4, step=7, batch_size=4, seq_len=24)
    assert a.shape == (4, 24) and a.dtype == np.int32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, d)
    assert (a[:, 0] == vocab.BOS_ID).all() and (a[:, 1:] >= len(vocab.SPECIALS)).all()
    s1 = [s.text for s, _ in zip(g.sentences(5), range(20))]
    s2 = [s.text for s, _ in zip(g.sentences(5), range(20))]
    assert s1 == s2 and len(set(s1)) > 10


def test_generated_sentences_agree():
    rng = random.Random(0)
    seen = set()
    for _ in range(3000):
        s = g.sample_sentence(rng)
        seen.add(s.structure)
        by_role = {}
        for w, role, num in s.tokens:
            by_role.setdefault(role, []).append((w, num))
        subj_word, subj_num = by_role["subj"][0]
        noun = vocab.NOUN_BY_FORM[subj_word]
        assert subj_word == noun.form(s.subj_number) and subj_num == s.subj_number
        det = by_role["det_subj"][0][0]
        assert vocab.WORD_INFO[det][1] in ("", s.subj_number)
        if noun.kind == "invariant":
            assert det != "the"  # the determiner must carry the number
        (verb, vnum), = by_role["verb"]
        pair = _verb_pair(verb)
        assert verb == pair[0 if s.subj_number == vocab.SG else 1]
        if "refl" in by_role:
            assert by_role["refl"][0][0] == vocab.reflexive(noun, s.subj_number)
        if s.structure == "simple":
            assert s.attr_number is None and "attr" not in by_role
        else:
            (attr, anum), = by_role["attr"]
            assert anum == s.attr_number and vocab.NOUN_BY_FORM[attr].form(anum) == attr
            adet = by_role["det_attr"][0][0]
            assert vocab.WORD_INFO[adet][1] in ("", anum)
        if s.structure == "orc":  # RC verb agrees with the RC subject (the attractor)
            (rc, _), = by_role["verb_rc"]
            assert rc == _verb_pair(rc)[0 if s.attr_number == vocab.SG else 1]
        if s.structure == "src":  # RC verb agrees with the head noun
            (rc, _), = by_role["verb_rc"]
            assert rc == _verb_pair(rc)[0 if s.subj_number == vocab.SG else 1]
        # the parser recovers the generator's roles and numbers
        ann = annotate.annotate(s.words)
        assert ann["role"] == [r for _, r, _ in s.tokens]
        assert ann["subj_number"][-1] == s.subj_number
        assert ann["attr_number"][-1] == (s.attr_number or "")
    assert seen == {"simple", "pp", "orc", "src"}


def test_annotate_windows_and_bad_input():
    ids = g.batch(0, 0, 2, 40)[0]
    ann = annotate.annotate(ids)
    assert all(len(v) == 40 for v in ann.values())
    assert ann["role"][0] == "bos" and "other" not in ann["role"]
    assert ann["role"].count("subj") >= 2
    bad = annotate.annotate("the author the laughs .")
    assert bad["role"][:3] == ["det_subj", "subj", "other"]
    assert annotate.annotate("these sheep")["subj_number"] == ["", "pl"]


def test_tokenizer_roundtrip_and_autotokenizer(tmp_path):
    from transformers import AutoTokenizer

    vocab.save_tokenizer(tmp_path)
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert (tmp_path / f).exists()
    tok = AutoTokenizer.from_pretrained(str(tmp_path))
    assert len(tok) == len(vocab.VOCAB)
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (vocab.BOS_ID, vocab.EOS_ID,
                                                                        vocab.PAD_ID)
    ids = g.batch(1, 0, 3, 30)
    for row in ids:
        text = vocab.decode(row[1:])
        enc = tok(text).input_ids
        assert enc == list(row) == vocab.encode(text)
        assert tok.decode(enc, skip_special_tokens=True) == text
    for word in vocab.VOCAB[len(vocab.SPECIALS):]:
        assert len(tok(word, add_special_tokens=False).input_ids) == 1
    assert tok("blorp").input_ids == [vocab.BOS_ID, vocab.UNK_ID]


def test_minimal_pair_files(tmp_path):
    from transformers import AutoTokenizer

    vocab.save_tokenizer(tmp_path / "tok")
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    assert set(gp.write_tasks(tmp_path / "base", n=4, seed=7)) == set(gp.BASE_TASKS)  # no novel task by default
    paths = gp.write_tasks(tmp_path / "tasks", n=60, seed=7, tasks=list(gp.TASKS))
    assert set(paths) == set(gp.TASKS) and gp.NOVEL_TASK in paths
    index = json.loads((tmp_path / "tasks" / "tasks.json").read_text())
    assert set(index) == set(gp.TASKS)
    for name, path in paths.items():
        pairs = gp.read_pairs(path)
        assert len(pairs) >= 50
        assert len({(p["clean_prefix"], p["clean_answer"]) for p in pairs}) == len(pairs)
        for p in pairs:
            assert p["clean_answer"] != p["patch_answer"]
            assert p["clean_answer"].startswith(" ") and p["patch_answer"].startswith(" ")
            pre = tok(p["clean_prefix"]).input_ids
            for ans in (p["clean_answer"], p["patch_answer"]):
                full = tok(p["clean_prefix"] + ans).input_ids
                assert full[:-1] == pre and len(full) == len(pre) + 1
                assert full[-1] not in (vocab.UNK_ID,)
            ann = p["annotation"]
            assert all(len(v) == len(pre) for v in ann.values())
            assert tok.convert_tokens_to_ids(ann["tokens"]) == pre
            # the clean continuation is grammatical: it parses and agrees
            full_ann = annotate.annotate(ann["tokens"] + [p["clean_answer"].strip()])
            assert "other" not in full_ann["role"]
            bad_num = vocab.WORD_INFO[p["patch_answer"].strip()][1]
            good_num = vocab.WORD_INFO[p["clean_answer"].strip()][1]
            assert {bad_num, good_num} == {vocab.SG, vocab.PL}
        if name.startswith("across_"):
            for p in pairs:
                ann = p["annotation"]
                assert p["attractor_number"] not in ("", p["subject_number"])
                assert ann["attr_number"][-1] == p["attractor_number"]
                assert ann["subj_number"][-1] == p["subject_number"]
                assert "attr" in ann["role"] and "subj" in ann["role"]
                good = vocab.WORD_INFO[p["clean_answer"].strip()][1]
                assert good == p["subject_number"]
    # balanced classes and a different pair stream for another seed
    pp = gp.read_pairs(paths["across_pp_attractor"])
    assert abs(sum(p["subject_number"] == "sg" for p in pp) - len(pp) / 2) <= 1
    other = gp.make_pairs("across_pp_attractor", 60, seed=8)
    assert [p["clean_prefix"] for p in other] != [p["clean_prefix"] for p in pp]


def test_novel_nouns_come_last_and_only_when_asked():
    novel_ids = {vocab.WORD_TO_ID[w] for w in vocab.NOVEL_WORDS}
    others = {vocab.WORD_TO_ID[w] for w in vocab.VOCAB if w not in vocab.NOVEL_WORDS}
    assert len(novel_ids) == 2 * len(vocab.NOVEL_NOUNS) and min(novel_ids) > max(others)  # old ids unchanged
    plain = g.batch(3, 0, 64, 32)
    assert not np.isin(plain, list(novel_ids)).any()
    assert np.array_equal(plain, g.batch(3, 0, 64, 32, g.GrammarConfig(p_novel=0.0)))
    mixed = g.batch(3, 0, 64, 32, g.GrammarConfig(p_novel=0.3))
    hit = np.isin(mixed, list(novel_ids))
    assert hit.mean() > 0.01
    for row in mixed[hit.any(axis=1)][:8]:
        ann = annotate.annotate(row.tolist())
        for i, t in enumerate(row):
            if int(t) in novel_ids:
                assert ann["novel"][i] and ann["role"][i] in ("subj", "attr", "obj", "other")
        subj_at = {ann["sentence"][i]: i for i, r in enumerate(ann["role"]) if r == "subj"}
        for i in range(len(row)):
            k = ann["sentence"][i]
            expect = k in subj_at and i >= subj_at[k] and ann["novel"][subj_at[k]]
            assert ann["subj_novel"][i] == expect
    # the novel task: "the" + a novel noun, so the noun alone carries the number
    for p in gp.make_pairs(gp.NOVEL_TASK, 40, seed=1):
        words = p["clean_prefix"].split()
        assert words[0] == "the" and words[1] in vocab.NOVEL_WORDS and len(words) == 2
        ann = p["annotation"]
        assert ann["novel"][2] and ann["subj_novel"][2] and not ann["novel"][1]


def test_powerlaw_rows_and_their_store(tmp_path):
    from crosscoder_jax.data.planted_store import write_powerlaw_store
    from crosscoder_jax.data.store import Store
    from crosscoder_jax.synthetic import powerlaw

    spec = powerlaw.PowerLaw(d_model=32, n_features=256, alpha=1.2, mean_active=6.0, noise=0.05, seed=3)
    p = spec.frequencies()
    assert abs(p.sum() - 6.0) < 1e-9 and (np.diff(p) < 0).all()  # power law, mean_active a row
    x = powerlaw.sample(spec, 4000, np.random.default_rng(0), scale=powerlaw.scale_of(spec))
    assert x.shape == (4000, 32) and abs(np.linalg.norm(x, axis=1).mean() / np.sqrt(32) - 1) < 0.05
    # the frequent directions carry more of the rows than the rare ones
    proj = np.abs(x @ spec.directions().T).mean(axis=0)
    assert proj[:3].mean() > 1.5 * proj[-100:].mean()
    w = write_powerlaw_store(tmp_path / "s", spec, 3000, chunk_size=1000)
    again = write_powerlaw_store(tmp_path / "t", spec, 3000, chunk_size=1000)
    a, b = Store(w.path).read_rows(0, 3000), Store(again.path).read_rows(0, 3000)
    assert a.shape == (3000, 1, 32) and np.array_equal(a, b)  # a rewrite is identical
