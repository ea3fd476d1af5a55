"""The phases of a run, each a module that reads on its own; `lalmbench.runner.run` calls them in order.

    prepare            preparation.py    configs, encoder, data, decoder + LoRA + projector, training identity,
                                         run directory claimed and locked                        -> Prepared
    train_or_reuse     training.py       train, resume or reuse the training of this identity    -> Trained
    evaluate_or_reuse  evaluation.py     every test set evaluated, or its cached score reused    -> Evaluated
    write_results      results.py        scores.tsv with intervals, run_summary.json, COMPLETED,
                                         the printed table and the HTML report                   -> RunResult

run_directory.py owns the run directory: its claim and lock, the run's log file, the names of the files
the phases hand on through it, and the decision to train, resume or reuse that rank 0 reads from it.
"""
