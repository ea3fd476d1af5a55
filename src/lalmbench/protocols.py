"""The two named protocols (README, "Protocols"), in a leaf module that config and metrics both import.

`official` reproduces the published system's numbers, its defects included; `corrected` is what
lalmbench believes is right. Never mixed silently.
"""

PROTOCOLS = ("official", "corrected")
DEFAULT_PROTOCOL = "official"
