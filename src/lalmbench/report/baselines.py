"""Published baseline scores and the challenge track of every public task (docs/protocol.md).

Data, and `track_of`. Task names here are the PROTOCOL table names, without the `eval_` prefix of the published
eval configs; `task_key` maps either spelling to this one.
"""

from __future__ import annotations

# XARES-LLM README (A100), per test set.
PUBLISHED_BASELINES: dict[str, dict[str, float]] = {
    "Dasheng-base": {
        "asvspoof2015": 0.937, "cremad": 0.621, "esc-50": 0.755, "fluentspeechcommands": 0.984,
        "freemusicarchive": 0.429, "fsd50k": 0.063, "fsdkaggle2018": 0.415, "gtzan": 0.323,
        "libricount": 0.386, "nsynth": 0.675, "speechcommandsv1": 0.655, "urbansound8k": 0.829,
        "vocalsound": 0.855, "voxceleb1": 0.974, "voxlingua33": 0.311,
        "aishell-1": 0.018, "clotho": 0.207, "librispeech": 0.103, "mecat": 0.60, "songdescriber": 0.41,
    },
    "Whisper-base": {
        "asvspoof2015": 0.943, "cremad": 0.516, "esc-50": 0.635, "fluentspeechcommands": 0.817,
        "freemusicarchive": 0.579, "fsd50k": 0.092, "fsdkaggle2018": 0.552, "gtzan": 0.697,
        "libricount": 0.409, "nsynth": 0.638, "speechcommandsv1": 0.694, "urbansound8k": 0.737,
        "vocalsound": 0.867, "voxceleb1": 0.762, "voxlingua33": 0.835,
        "aishell-1": 0.361, "clotho": 0.358, "librispeech": 0.385, "mecat": 0.624, "songdescriber": 0.448,
    },
}

# The suite overall scores as published (weighted means; not recomputed from the rows above).
PUBLISHED_OVERALL: dict[str, dict[str, float]] = {
    "Dasheng-base": {"task1": 0.614, "task2": 0.27},
    "Whisper-base": {"task1": 0.652, "task2": 0.40},
}

# Track A: the task1 classification suite. Track B: the task2 open-ended suite.
TRACK_A_TASKS: tuple[str, ...] = (
    "asvspoof2015", "cremad", "esc-50", "fluentspeechcommands", "freemusicarchive", "fsd50k",
    "fsdkaggle2018", "gtzan", "libricount", "nsynth", "speechcommandsv1", "urbansound8k",
    "vocalsound", "voxceleb1", "voxlingua33",
)
TRACK_B_TASKS: tuple[str, ...] = ("aishell-1", "clotho", "librispeech", "mecat", "songdescriber")


def task_key(name: str) -> str:
    """`eval_esc-50`, `ESC-50` and `esc-50` all name the same task: `esc-50`."""
    name = name.strip().lower()
    return name[len("eval_"):] if name.startswith("eval_") else name


def track_of(task: str, metric: str | None = None) -> str | None:
    """'A', 'B', or None when neither the name nor the metric places the task. Tasks outside the public
    suites (a custom or demo task) join the track of their metric's spec (metrics.MetricSpec.track)."""
    from lalmbench import metrics

    key = task_key(task)
    if key in TRACK_A_TASKS:
        return "A"
    if key in TRACK_B_TASKS:
        return "B"
    try:
        return metrics.get(metric).track if metric else None
    except KeyError:  # a metric not registered in this process places nothing
        return None
