"""Audio encoders: the challenge contract, loading from a file or dotted path, and LogMelEncoder."""

from lalmbench.encoders.contract import FrozenEncoder, validate_encoder
from lalmbench.encoders.loading import encoder_identity, load_encoder
from lalmbench.encoders.logmel import LogMelEncoder

__all__ = ["FrozenEncoder", "LogMelEncoder", "encoder_identity", "load_encoder", "validate_encoder"]
