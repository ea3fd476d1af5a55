"""lalmbench: score audio encoders by the audio language model built on them.

The run flows one way: config -> tasks -> data -> model -> train -> evaluate -> metrics -> report.
"""

__version__ = "0.1.1"
