"""Log-mel baseline encoder: no weights, 25 frames per second of 256 values (4 stacked 64-mel frames).

Copy this file to start from the simplest encoder that passes every check:
    lalmbench check examples/encoders/logmel_encoder.py --model-args '{"n_mels": 80}'
"""

from lalmbench.encoders import logmel  # imported as a module: the file must hold exactly one *Encoder name


class LogMelEncoder(logmel.LogMelEncoder):
    """lalmbench's LogMelEncoder with the knobs a participant is most likely to change."""

    def __init__(self, n_mels: int = 64, stack: int = 4, hop_ms: float = 10.0):
        super().__init__(n_mels=n_mels, stack=stack, hop_ms=hop_ms)
