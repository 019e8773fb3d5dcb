"""Stage: the embedded default world, with known ground truth and no dependencies.

Takes: seeds. Gives: token streams of a synthetic agreement language (`grammar`, over the words
and tokenizer of `vocab`), each token's grammatical role and numbers (`annotate`), minimal-pair
task files (`pairs`), and sparse features with known lifecycles across checkpoints (`planted`)
with the score of a crosscoder against them.

Imports no other stage: the data stage turns these into token contexts, tasks and planted
stores, training pretrains the tiny LM on the language, analysis labels latents by the annotation.
"""
