"""The scripts' side: absl flags defined once per script, their checks, and the typed configs built
from them; the only part of the library that reads absl flags.
"""
