"""Training-mixture weights of the suites task1 / task2 / all: item 1 (suites) of docs/fidelity.md.

    python scripts/parity/mixture_weights.py

Each dataset's share of training batches, as each system's own sampler code computes it from its own suite
YAML: the published `BalancedDatasetSampler` (built by the published `AudioTextTokenWebdataset` in training
mode, its `probs` normalized as its RandomMix normalizes them) beside lalmbench's `PublishedStream` (protocol
official: the cumulative weights it draws against, differenced) and `mixture.mixture_weights` (protocol
corrected). Nothing is downloaded: both count shards from the YAML's patterns. Target: the same datasets with
the same shares (|diff| <= 1e-9) in every suite, for both of lalmbench's samplers.
"""

from __future__ import annotations

import numpy as np

from kit import XARES_SRC, Tally, need

PUBLISHED = {"task1": "task1/train/train_task1_config.yaml", "task2": "task2/train/train_task2_config.yaml",
             "all": "all/train/all_train_config.yaml"}


class _NoTokenizer:
    """The published dataset wants a tokenizer object; building the sampler never calls it."""

    pad_token = eos_token = "</s>"


def published_shares(path) -> dict[str, float]:
    import yaml
    from xares_llm.audiowebdataset import AudioTextDataType, AudioTextTokenWebdataset

    data = [AudioTextDataType(name=name, **spec) for name, spec in yaml.safe_load(open(path))["train_data"].items()]
    sampler = AudioTextTokenWebdataset(data_urls=data, tokenizer=_NoTokenizer(), training=True,
                                       resample=True).create_dataset()
    probs = np.array(sampler.probs) / np.sum(sampler.probs)
    return {spec.name: float(p) for spec, p in zip(data, probs)}


def lalmbench_shares(suite: str) -> tuple[dict[str, float], dict[str, float]]:
    from lalmbench.config import load_train_config
    from lalmbench.data.mixture import mixture_weights
    from lalmbench.data.official_stream import PublishedStream
    from lalmbench.data.examples import BadDataCounter
    from lalmbench.data.shards import hub_relative_paths

    specs = list(load_train_config(suite).train_data.values())
    shards = {s.name: [f"/nowhere/{rel}" for rel in hub_relative_paths(s)] for s in specs}
    stream = PublishedStream(specs, shards, 4, 42, lambda name, text: 0, BadDataCounter())
    official = np.diff(np.concatenate([[0.0], stream.cumulative]))
    corrected = mixture_weights(specs, [len(shards[s.name]) for s in specs])
    return ({s.name: float(w) for s, w in zip(specs, official)}, {s.name: float(w) for s, w in zip(specs, corrected)})


def main() -> None:
    tally = Tally("training-mixture shares per suite, from each system's sampler")
    published_root = need(XARES_SRC / "src/xares_llm/tasks", "published task YAMLs", "set XARES_SRC")
    for suite, path in PUBLISHED.items():
        reference = published_shares(published_root / path)
        official, corrected = lalmbench_shares(suite)
        for protocol, mine in (("official", official), ("corrected", corrected)):
            tally.same(f"[{suite}, {protocol}] datasets", sorted(reference), sorted(mine))
            for name in sorted(set(reference) | set(mine)):
                tally.compare(f"[{suite}, {protocol}] {name}", reference.get(name, 0.0), mine.get(name, 0.0), 1e-9,
                              digits=6)
    tally.finish()


if __name__ == "__main__":
    main()
